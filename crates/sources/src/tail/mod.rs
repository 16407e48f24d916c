//! Following files: identity, checkpoints, rotation, framing.
