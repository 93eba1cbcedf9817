variable "agent_id" {
  description = "The agent's id (UMS_AGENT_ID), unique in the deployment, e.g. azure-eastus-1. Required for an agent; null for a frontman."
  type        = string
  default     = null
  validation {
    # Stricter than core/events.ts AgentId (which also allows capitals and "_"): the id names cloud resources too.
    condition     = var.agent_id == null ? true : can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.agent_id))
    error_message = "agent_id must be lowercase letters, digits and dashes (at most 63), starting with a letter or digit."
  }
}

variable "cloud" {
  description = "The cloud the host is in (UMS_CLOUD): azure, gcp or aws. It also chooses how secrets are fetched."
  type        = string
  validation {
    condition     = contains(["azure", "gcp", "aws"], var.cloud)
    error_message = "cloud must be one of azure, gcp, aws."
  }
}

variable "region" {
  description = "The region or site of the host (UMS_REGION), e.g. eastus."
  type        = string
  validation {
    condition     = length(var.region) > 0
    error_message = "region must not be empty."
  }
}

variable "store_url" {
  description = "This host's object store (UMS_STORE_URL): s3://bucket/prefix, azblob://account/container/prefix or gs://bucket/prefix. Never carries credentials. Required for an agent; null for a frontman."
  type        = string
  default     = null
  validation {
    condition     = var.store_url == null ? true : can(regex("^(s3|gs)://[a-z0-9][a-z0-9._-]+[a-z0-9](/.*)?$|^azblob://[a-z0-9]{3,24}/[a-z0-9-]{3,63}(/.*)?$", var.store_url)) && !strcontains(var.store_url, "@")
    error_message = "store_url must be s3://, gs:// or azblob://account/container, without credentials."
  }
}

variable "nats_url" {
  description = "The broker's URL (NATS_URL), tls://host:4222; a comma-separated list for a cluster."
  type        = string
  validation {
    condition     = alltrue([for u in split(",", var.nats_url) : can(regex("^tls://[^/,]+:[0-9]+$", trimspace(u)))])
    error_message = "nats_url must be one or more tls://host:port (the broker refuses clients without TLS)."
  }
}

variable "nats_ca_pem" {
  description = "The broker's CA certificate (PEM). Public: it is written to the host in clear (UMS_NATS_CA points at it)."
  type        = string
  validation {
    condition     = startswith(trimspace(var.nats_ca_pem), "-----BEGIN CERTIFICATE-----")
    error_message = "nats_ca_pem must be a PEM certificate."
  }
}

variable "command_verify_key" {
  description = "The functions' command-signing public key (UMS_COMMAND_VERIFY_KEY: raw Ed25519, base64; comma-separated while rotating). Public; without it the agent refuses every command. Required for an agent; null for a frontman."
  type        = string
  default     = null
  validation {
    condition     = var.command_verify_key == null ? true : alltrue([for k in split(",", var.command_verify_key) : can(regex("^[A-Za-z0-9+/]{43}=$", trimspace(k)))])
    error_message = "command_verify_key must be one or more base64 raw Ed25519 public keys (32 bytes), comma-separated."
  }
}

variable "secrets" {
  description = <<-EOT
    Where the host's secrets live in its cloud's secret manager; fetched at every agent start with the host's
    own identity, never written into cloud-init or Terraform state. nats_credential: the agent's broker
    credential ({"principal": "agent-<id>", "seed": "SU..."}). storage_key: the Azure storage account key
    (AZURE_STORAGE_KEY; agents/main.ts does not use a managed identity for Blob yet), null elsewhere.
    gcp: secret ids in project `project`; azure: secret names in the vault named `vault`; aws: secret ARNs.
  EOT
  type = object({
    nats_credential = string
    storage_key     = optional(string)
    project         = optional(string)
    vault           = optional(string)
  })
  validation {
    condition     = length(var.secrets.nats_credential) > 0
    error_message = "secrets.nats_credential must name the agent's broker credential secret."
  }
}

variable "page_relay_address" {
  description = "The address other hosts reach this host's page relay at (UMS_PAGE_RELAY_ADDRESS; post-copy). null: this host takes no part in post-copy."
  type        = string
  default     = null
}

variable "page_relay_ports" {
  description = "The ports the page relay listens on when a migration leaves this host post-copy (UMS_PAGE_RELAY_PORTS): one per such migration at once (a relay keeps its port until the destination has every page, and up to 30 s after). The host modules open exactly these to the deployment's other hosts. Set only with page_relay_address."
  type = object({
    from = number
    to   = number
  })
  default = { from = 7700, to = 7715 }
  validation {
    condition     = var.page_relay_ports.from >= 1 && var.page_relay_ports.to <= 65535 && var.page_relay_ports.from <= var.page_relay_ports.to && floor(var.page_relay_ports.from) == var.page_relay_ports.from && floor(var.page_relay_ports.to) == var.page_relay_ports.to
    error_message = "page_relay_ports must be whole ports from 1 to 65535, from <= to."
  }
}

variable "page_relay_listen" {
  description = "The local address the page relay binds (UMS_PAGE_RELAY_LISTEN). A cloud VM's public address is translated to its private one and cannot be bound, so all interfaces; the firewall decides who reaches the ports, and each stream's key who may use them. Set only with page_relay_address."
  type        = string
  default     = "0.0.0.0"
}

variable "engine" {
  description = "The container engine the agent drives (UMS_ENGINE): podman (with the runtime shim post-copy needs) or docker (docker.io, dockerd in experimental mode, /etc/criu/runc.conf with tcp-established and file-locks; stop-and-copy only, so no page_relay_address)."
  type        = string
  default     = "podman"
  validation {
    condition     = contains(["podman", "docker"], var.engine)
    error_message = "engine must be podman or docker."
  }
}

variable "service_address" {
  description = "Where clients reach the ports this host's containers publish: its public address (UMS_SERVICE_ADDRESS). A service's frontman forwards there after a migration; null: no frontman can forward to this host."
  type        = string
  default     = null
}

variable "frontman" {
  description = <<-EOT
    Set to render a frontman instead of an agent (the same install, secret fetching and boot; the
    ums-frontman unit running frontman/main.ts). id: UMS_FRONTMAN_ID. services: UMS_FRONTMAN_SERVICES, each
    {container, protocol = http|tcp, listen = "host:port" the frontman binds, port = the host port the
    container publishes, hold_seconds}. The limits (UMS_FRONTMAN_HOLD_SECONDS, _DRAIN_SECONDS, _MAX_HELD,
    _MAX_HELD_MIB, _MAX_BODY_KIB) are set only when given: frontman/main.ts's defaults apply otherwise.
    null: an agent.
  EOT
  type = object({
    id = string
    services = list(object({
      container    = string
      protocol     = string
      listen       = string
      port         = number
      hold_seconds = optional(number)
    }))
    hold_seconds  = optional(number)
    drain_seconds = optional(number)
    max_held      = optional(number)
    max_held_mib  = optional(number)
    max_body_kib  = optional(number)
  })
  default = null
  validation {
    # core/events.ts FrontmanId.
    condition     = var.frontman == null ? true : can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", var.frontman.id))
    error_message = "frontman.id must be letters, digits, '_' and '-' (at most 64), starting with a letter or digit."
  }
  validation {
    # frontman/main.ts ServicesConfig: 1 to 256 services, protocol http or tcp, listen host:port, port 1-65535, hold up to 600 s.
    condition = var.frontman == null ? true : length(var.frontman.services) >= 1 && length(var.frontman.services) <= 256 && alltrue([
      for s in var.frontman.services : contains(["http", "tcp"], s.protocol) && can(regex("^.+:[0-9]{1,5}$", s.listen)) &&
      s.port >= 1 && s.port <= 65535 && floor(s.port) == s.port && (s.hold_seconds == null ? true : s.hold_seconds > 0 && s.hold_seconds <= 600)
    ])
    error_message = "frontman.services must list 1 to 256 services, each with protocol http or tcp, listen host:port, a port from 1 to 65535 and hold_seconds in (0, 600]."
  }
  validation {
    condition     = var.frontman == null ? true : length(distinct([for s in var.frontman.services : s.listen])) == length(var.frontman.services)
    error_message = "frontman.services must not share a listen address."
  }
  validation {
    condition = var.frontman == null ? true : alltrue([
      for v in [var.frontman.hold_seconds, var.frontman.drain_seconds, var.frontman.max_held, var.frontman.max_held_mib, var.frontman.max_body_kib] : v == null ? true : v > 0
    ])
    error_message = "frontman's limits must be positive when set."
  }
}

variable "chunk_mib" {
  description = "Checkpoint chunk size in MiB (UMS_CHUNK_MIB); core/checkpoint-artifact.ts MAX_CHUNK_MIB bounds it."
  type        = number
  default     = 4
  validation {
    condition     = var.chunk_mib >= 1 && var.chunk_mib <= 64 && floor(var.chunk_mib) == var.chunk_mib
    error_message = "chunk_mib must be a whole number from 1 to 64."
  }
}

variable "transfer_parallel" {
  description = "Chunks moving at once, each way (UMS_TRANSFER_PARALLEL)."
  type        = number
  default     = 4
  validation {
    condition     = var.transfer_parallel >= 1 && floor(var.transfer_parallel) == var.transfer_parallel
    error_message = "transfer_parallel must be a positive whole number."
  }
}

variable "idle_timeout_seconds" {
  description = "Give up a restore when nothing arrives for this long (UMS_IDLE_TIMEOUT_SECONDS)."
  type        = number
  default     = 120
  validation {
    condition     = var.idle_timeout_seconds >= 1 && floor(var.idle_timeout_seconds) == var.idle_timeout_seconds
    error_message = "idle_timeout_seconds must be a positive whole number."
  }
}

variable "log_level" {
  description = "The agent's (or frontman's) log level (UMS_LOG_LEVEL): trace, debug, info, warn, error."
  type        = string
  default     = "info"
  validation {
    condition     = contains(["trace", "debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level must be trace, debug, info, warn or error."
  }
}

variable "release_url" {
  description = "HTTPS URL of the UMS release tarball (the repository with dist/ built and production node_modules; see terraform/README.md)."
  type        = string
  validation {
    condition     = startswith(var.release_url, "https://")
    error_message = "release_url must be an https:// URL."
  }
}

variable "release_sha256" {
  description = "SHA-256 of the release tarball: the host refuses any other file."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.release_sha256))
    error_message = "release_sha256 must be 64 lowercase hex digits."
  }
}

variable "notices" {
  description = "Watch the host's cloud's instance metadata for eviction and maintenance notices (UMS_NOTICES) and publish them, so that a host whose end is announced is evacuated; the agent then also measures its uplink at start, which the evacuation predicts with."
  type        = bool
  default     = true
}

variable "max_upload_rate_mib" {
  description = "The most the host's uploads of checkpoints and images send per second, in MiB, all migrations together (UMS_MAX_UPLOAD_RATE): leaves the services still running some of the link. null: no cap."
  type        = number
  default     = null
  validation {
    condition     = var.max_upload_rate_mib == null ? true : var.max_upload_rate_mib > 0
    error_message = "max_upload_rate_mib must be positive, or null for no cap."
  }
}
