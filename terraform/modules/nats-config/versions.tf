terraform {
  # No provider: this module only renders text (nats.conf),
  # so it initialises, validates and is tested offline, and the broker modules and the tests share it.
  required_version = ">= 1.6"
}
