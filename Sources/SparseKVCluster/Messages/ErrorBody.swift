/// A request failed: a code a program can act on and a message a user can read.
public struct ErrorBody: Sendable, Equatable {
    public var code: WireErrorCode
    /// At most ``WireProtocol/maxErrorMessageLength`` bytes of UTF-8.
    public var message: String

    public init(code: WireErrorCode, message: String) {
        self.code = code
        self.message = message
    }
}
