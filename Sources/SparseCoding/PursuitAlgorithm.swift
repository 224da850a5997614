/// How the encoder chooses coefficients once it has chosen an atom.
public enum PursuitAlgorithm: String, Sendable, CaseIterable {
    /// Matching Pursuit (the CSR paper): c = <R, d_n>, R -= c d_n. An atom may be chosen
    /// more than once; each choice is its own pair.
    case matchingPursuit = "MP"
    /// Orthogonal Matching Pursuit: the same choice of atom, then every coefficient so far
    /// re-fitted by least squares on the chosen atoms. Never repeats an atom; costs about
    /// s/2 times more correlation updates than MP.
    case orthogonal = "OMP"
}
