"""pytest plugins shared by the qscale test suites."""
