terraform {
  # No provider: this module only renders text (cloud-init, the systemd units, the agent's environment),
  # so it initialises, validates and is tested offline, and every host module (aws/azure/gcp) shares it.
  required_version = ">= 1.6"
}
