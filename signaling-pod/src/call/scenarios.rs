//! Scenario tests of the call core on virtual time.
