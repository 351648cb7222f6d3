"""Entry points and experiment logic: training, the epoch loop, testing and plotting scripts."""
