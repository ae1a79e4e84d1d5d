"""What the tests, the benches and `make run` share: tiny generated models, real server
processes, the emulated Kubernetes API, sample resources and independent checkers. Not shipped
in the images."""
