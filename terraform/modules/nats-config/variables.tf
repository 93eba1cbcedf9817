variable "server_name" {
  description = "This server's name (unique in the cluster; JetStream's RAFT groups know servers by it)."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]+$", var.server_name))
    error_message = "server_name must be letters, digits, '_' and '-'."
  }
}

variable "listen_address" {
  description = "The address the client and cluster listeners bind (all interfaces on a broker VM; the firewall decides who reaches them)."
  type        = string
  default     = "0.0.0.0"
}

variable "client_port" {
  description = "The TLS client port agents, functions, the bridge and `ums` connect to."
  type        = number
  default     = 4222
}

variable "cluster_port" {
  description = "The port cluster routes use between the broker's own servers (never opened to anyone else)."
  type        = number
  default     = 6222
}

variable "routes" {
  description = "The other servers of the cluster, host:port each (nats-route://). Empty: a single server without a cluster block."
  type        = list(string)
  default     = []
}

variable "cluster_name" {
  description = "The cluster's name."
  type        = string
  default     = "ums"
}

variable "cert_file" {
  description = "The server certificate (PEM; its SANs name every address clients use)."
  type        = string
  default     = "/etc/nats/server.pem"
}

variable "key_file" {
  description = "The server's private key (PEM): fetched from the secret manager at start onto tmpfs, never in cloud-init."
  type        = string
  default     = "/run/ums-nats/server.key"
}

variable "ca_file" {
  description = "The CA that signed the servers' certificates: routes verify each other with it."
  type        = string
  default     = "/etc/nats/ca.pem"
}

variable "store_dir" {
  description = "JetStream's storage directory."
  type        = string
  default     = "/var/lib/nats/jetstream"
}

variable "max_file_store_gib" {
  description = "JetStream's file storage limit, GiB (events, commands, the saga's KV buckets: small)."
  type        = number
  default     = 10
}

variable "authorization" {
  description = "The `authorization` block: one nkey user per principal with its permissions, as `node dist/infra/deploy-credentials.js` writes it (authorization.conf; public keys only, no secret)."
  type        = string
  validation {
    condition     = startswith(trimspace(var.authorization), "authorization:") && !strcontains(var.authorization, "\"SU")
    error_message = "authorization must be an `authorization:` block of public nkeys; a seed (SU...) must never be passed here."
  }
}

variable "server_cert_pem" {
  description = "The server certificate's PEM (public), written to cert_file by boot_script; \"\" when the certificate is put there otherwise."
  type        = string
  default     = ""
}

variable "ca_pem" {
  description = "The CA certificate's PEM (public), written to ca_file by boot_script; \"\" when put there otherwise."
  type        = string
  default     = ""
}

variable "key_secret" {
  description = "Where boot_script's service fetches the TLS key from at every start (GCP Secret Manager: project and secret id), onto key_file's tmpfs directory; null: boot_script is not used."
  type = object({
    project = string
    secret  = string
  })
  default = null
}
