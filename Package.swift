// swift-tools-version:6.0
import PackageDescription

// Targets depend one way: C shims -> engine -> (cluster) -> CLI. See ../shared/STYLE.md.
let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "SparseKV",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sparsekv", targets: ["sparsekv"]),
        .library(name: "SparseKVEngine", targets: ["SparseKVEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // MARK: - C shims (system libraries found through pkg-config)
        .systemLibrary(
            name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CZMQ", path: "Sources/CZMQ", pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]),

        // MARK: - Model engine: GGUF, tokenizer, forward pass, KV caches, sampling
        .target(
            name: "SparseKVEngine",
            dependencies: ["CBLAS"],
            swiftSettings: optimize),

        // MARK: - CLI
        .executableTarget(
            name: "sparsekv",
            dependencies: [
                "SparseKVEngine", "CZMQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: optimize),

        // MARK: - Tests
        .testTarget(
            name: "SparseKVEngineTests",
            dependencies: ["SparseKVEngine"],
            resources: [.copy("Fixtures")]),
    ]
)
