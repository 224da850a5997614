import SparseCoding

/// The seedable generator behind `--seed` (xoshiro256** seeded by SplitMix64, from the
/// sparse coding library), so a sampled generation reproduces exactly on every platform.
public typealias SeededGenerator = Xoshiro256StarStar
