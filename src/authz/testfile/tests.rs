//! Unit and property tests of the test-file parser and runner.
