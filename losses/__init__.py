"""lossforge.losses: the reference catalogue, the store of discovered losses, export."""
