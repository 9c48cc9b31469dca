"""Reference implementations the tests check the library against (and the benchmarks time
it against): the 2018 code's dense one-hot message passing and its one-simulation-at-a-time
NumPy simulators. Not part of the library."""
