/// The merge rules of a byte-level BPE vocabulary, compiled to integers, and the merge
/// loop that turns one pre-tokenized word into token ids.
///
/// Merging works on *pieces*: a piece is a token id when its text is in the vocabulary,
/// and an id at or above `vocabularySize` for a text that only appears as a side or a
/// result of a merge rule. Keying the rules by pairs of pieces gives the same results as
/// llama.cpp's string-keyed `bpe_ranks` without building a string per candidate pair.
struct BPEMergeTable: Sendable {
    /// One merge rule: its priority (lower merges first) and the piece it produces.
    struct Merge: Sendable {
        var rank: Int32
        var result: Int32
    }

    /// Number of real tokens; pieces from here up have no token of their own.
    let vocabularySize: Int
    /// `bytePiece[b]` is the piece of the one-byte text GPT-2 uses for byte `b`.  (256)
    let bytePiece: [Int32]
    /// Rules keyed by `left << 32 | right` (pieces as UInt32).
    let merges: [UInt64: Merge]
    /// For each piece >= `vocabularySize`: the tokens llama.cpp emits for it, one per
    /// byte of its spelling that is itself a one-character token (usually none).
    let fallbackTokens: [[Int32]]

    /// Compiles merge rules given as "left right" strings in rank order (first = 0).
    /// Rules without a space, or with an empty side, can never apply and are skipped;
    /// of two rules for the same pair the first wins, as in llama.cpp.
    init(tokens: [String], textToID: [String: Int32], merges rules: [String]) {
        var extraTexts: [String] = []
        var extraIDs: [String: Int32] = [:]
        let n = tokens.count
        func piece(_ text: String) -> Int32 {
            if let id = textToID[text] { return id }
            if let id = extraIDs[text] { return id }
            let id = Int32(n + extraTexts.count)
            extraTexts.append(text)
            extraIDs[text] = id
            return id
        }

        bytePiece = ByteUnicode.scalarForByte.map { v in
            piece(Unicode.Scalar(v).map { String(Character($0)) } ?? "")
        }

        var table: [UInt64: Merge] = [:]
        table.reserveCapacity(rules.count)
        for (rank, rule) in rules.enumerated() {
            let utf8 = rule.utf8
            // The separator is the first space after the first byte, so a rule may
            // merge a piece that starts with a space byte's spelling.
            guard utf8.count > 2,
                  let space = utf8[utf8.index(after: utf8.startIndex)...].firstIndex(of: 0x20)
            else { continue }
            let left = String(rule[..<space])
            let right = String(rule[utf8.index(after: space)...])
            guard !left.isEmpty, !right.isEmpty else { continue }
            let key = Self.key(piece(left), piece(right))
            if table[key] == nil {
                table[key] = Merge(rank: Int32(clamping: rank), result: piece(left + right))
            }
        }
        merges = table
        vocabularySize = n

        var ascii = [Int32?](repeating: nil, count: 128)
        for b in 0..<128 {
            if let u = Unicode.Scalar(UInt32(b)) { ascii[b] = textToID[String(Character(u))] }
        }
        fallbackTokens = extraTexts.map { text in text.utf8.compactMap { $0 < 128 ? ascii[Int($0)] : nil } }
    }

    @inline(__always)
    static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    // MARK: - Merging one word

    /// Working memory reused across words, so the merge loop does not allocate.
    struct Scratch {
        /// Current piece of each symbol, -1 once merged into its left neighbour.  (bytes)
        var piece: [Int32] = []
        /// Linked list of live symbols in text order; -1 ends it.  (bytes)
        var prev: [Int32] = []
        var next: [Int32] = []
        /// Min-heap of candidate merges by (rank, left position).
        var heap: [Candidate] = []
    }

    struct Candidate {
        var rank: Int32
        var left: Int32
        var right: Int32
        var leftPiece: Int32
        var rightPiece: Int32
        var result: Int32

        @inline(__always)
        func comesBefore(_ o: Candidate) -> Bool { rank < o.rank || (rank == o.rank && left < o.left) }
    }

    /// Appends the tokens of one word (its raw UTF-8 bytes) to `out`.
    ///
    /// Starts from one symbol per byte and repeatedly applies the lowest-ranked rule
    /// that matches two neighbours, leftmost first on ties. A candidate that went stale
    /// (a side changed or was absorbed) is dropped when it reaches the top of the heap,
    /// which is cheaper than removing it when the neighbourhood changes.
    func encodeWord(_ bytes: ArraySlice<UInt8>, scratch s: inout Scratch, into out: inout [Int32]) {
        let m = bytes.count
        guard m > 0 else { return }
        if m == 1, let b = bytes.first {
            emit(bytePiece[Int(b)], into: &out)
            return
        }
        s.piece.removeAll(keepingCapacity: true)
        s.prev.removeAll(keepingCapacity: true)
        s.next.removeAll(keepingCapacity: true)
        s.heap.removeAll(keepingCapacity: true)
        for (i, b) in bytes.enumerated() {
            s.piece.append(bytePiece[Int(b)])
            s.prev.append(Int32(i - 1))
            s.next.append(i + 1 < m ? Int32(i + 1) : -1)
        }
        for i in 1..<m { push(Int32(i - 1), Int32(i), &s) }

        while let c = popMin(&s) {
            let l = Int(c.left), r = Int(c.right)
            guard s.piece[l] == c.leftPiece, s.piece[r] == c.rightPiece, s.next[l] == c.right else { continue }
            s.piece[l] = c.result
            s.piece[r] = -1
            let after = s.next[r]
            s.next[l] = after
            if after >= 0 { s.prev[Int(after)] = c.left }
            if s.prev[l] >= 0 { push(s.prev[l], c.left, &s) }
            if after >= 0 { push(c.left, after, &s) }
        }

        var i: Int32 = 0  // symbol 0 is never absorbed: merges fold right into left
        while i >= 0 {
            emit(s.piece[Int(i)], into: &out)
            i = s.next[Int(i)]
        }
    }

    @inline(__always)
    private func emit(_ piece: Int32, into out: inout [Int32]) {
        if Int(piece) < vocabularySize {
            out.append(piece)
        } else {
            out.append(contentsOf: fallbackTokens[Int(piece) - vocabularySize])
        }
    }

    // MARK: - Heap

    @inline(__always)
    private func push(_ left: Int32, _ right: Int32, _ s: inout Scratch) {
        let lp = s.piece[Int(left)], rp = s.piece[Int(right)]
        guard let merge = merges[Self.key(lp, rp)] else { return }
        s.heap.append(Candidate(
            rank: merge.rank, left: left, right: right, leftPiece: lp, rightPiece: rp, result: merge.result))
        var i = s.heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard s.heap[i].comesBefore(s.heap[parent]) else { break }
            s.heap.swapAt(i, parent)
            i = parent
        }
    }

    @inline(__always)
    private func popMin(_ s: inout Scratch) -> Candidate? {
        guard let top = s.heap.first else { return nil }
        let last = s.heap.removeLast()
        let n = s.heap.count
        guard n > 0 else { return top }
        s.heap[0] = last
        var i = 0
        while true {
            let a = 2 * i + 1, b = a + 1
            var best = i
            if a < n, s.heap[a].comesBefore(s.heap[best]) { best = a }
            if b < n, s.heap[b].comesBefore(s.heap[best]) { best = b }
            if best == i { break }
            s.heap.swapAt(i, best)
            i = best
        }
        return top
    }
}
