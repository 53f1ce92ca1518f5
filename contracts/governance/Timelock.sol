// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

// The protocol's governance delay is OpenZeppelin's TimelockController, deployed unmodified. This
// import makes the project build compile it, so that `build/contracts.json` carries its artifact
// (`TimelockController`) and its errors reach docs/errors.md. See docs/governance.md.
import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";
