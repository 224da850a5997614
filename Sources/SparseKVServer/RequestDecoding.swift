import Foundation

/// Turns a request body into a request type, and every decoding failure into a 400
/// ``APIError`` that names the field.
enum RequestDecoding {
    static func decode<T: Decodable>(_ type: T.Type, from body: [UInt8]) throws(APIError) -> T {
        let data = Data(body)
        // Syntax first, so bad JSON is told apart from a wrong field.
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            throw APIError.invalidJSON((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)")
        }
        guard object is [String: Any] else { throw APIError.invalid("the request body must be a JSON object", code: "invalid_json") }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let e as APIError {
            throw e
        } catch let e as DecodingError {
            throw APIError.invalid(describe(e), param: path(e), code: "invalid_value")
        } catch {
            throw APIError.invalid("\(error)")
        }
    }

    private static func path(_ e: DecodingError) -> String? {
        let keys: [any CodingKey]
        switch e {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): keys = c.codingPath
        case .keyNotFound(let k, let c): keys = c.codingPath + [k]
        @unknown default: return nil
        }
        guard !keys.isEmpty else { return nil }
        return keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }

    private static func describe(_ e: DecodingError) -> String {
        let field = path(e) ?? "the body"
        switch e {
        case .keyNotFound: return "missing required field \(field)"
        case .typeMismatch(let t, _): return "\(field) has the wrong type (expected \(t))"
        case .valueNotFound(let t, _): return "\(field) is null (expected \(t))"
        case .dataCorrupted(let c): return "\(field): \(c.debugDescription)"
        @unknown default: return "\(field) is not valid"
        }
    }
}
