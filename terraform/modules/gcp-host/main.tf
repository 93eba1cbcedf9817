locals {
  # Post-copy goes through the runtime shim Podman is given: a Docker host announces no page relay and opens none.
  page_relay = var.post_copy && var.engine == "podman"
  # The relay's fixed ports (UMS_PAGE_RELAY_PORTS), as the firewall spells a range.
  relay_ports    = var.page_relay_ports.from == var.page_relay_ports.to ? tostring(var.page_relay_ports.from) : "${var.page_relay_ports.from}-${var.page_relay_ports.to}"
  objects_prefix = var.bucket_prefix == "" ? "" : "${var.bucket_prefix}/"
  tag            = "ums-agent-${var.agent_id}"
}

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = substr("ums-${var.agent_id}", 0, 30)
  display_name = "UMS agent ${var.agent_id}"
}

# Objects of this cloud's bucket, under UMS's prefix only (an IAM condition on the object's name).
resource "google_storage_bucket_iam_member" "objects" {
  bucket = var.bucket
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.this.email}"
  condition {
    title       = "ums-prefix-only"
    description = "Objects under UMS's prefix"
    expression  = "resource.name.startsWith(\"projects/_/buckets/${var.bucket}/objects/${local.objects_prefix}\")"
  }
}

resource "google_secret_manager_secret_iam_member" "nats_credential" {
  project   = var.project_id
  secret_id = var.nats_credential_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

resource "google_compute_address" "this" {
  count   = var.post_copy ? 1 : 0
  project = var.project_id
  region  = var.region
  name    = "ums-${var.agent_id}"
}

module "cloud_init" {
  source = "../agent-cloud-init"

  agent_id           = var.agent_id
  cloud              = "gcp"
  region             = var.region
  store_url          = var.store_url
  nats_url           = var.nats_url
  nats_ca_pem        = var.nats_ca_pem
  command_verify_key = var.command_verify_key
  secrets            = { nats_credential = var.nats_credential_secret_id, project = var.project_id }
  engine             = var.engine
  page_relay_address = local.page_relay ? google_compute_address.this[0].address : null
  page_relay_ports   = var.page_relay_ports
  # Where a frontman reaches the ports this host's containers publish (the same stable public address).
  service_address = var.post_copy ? google_compute_address.this[0].address : null
  release_url     = var.release_url
  release_sha256  = var.release_sha256
}

resource "google_compute_instance" "this" {
  project      = var.project_id
  zone         = var.zone
  name         = var.agent_id
  machine_type = var.machine_type
  tags         = [local.tag]
  labels       = var.labels

  boot_disk {
    initialize_params {
      image = var.image
      size  = var.boot_disk_gib
      type  = "pd-balanced"
    }
  }

  network_interface {
    network    = var.network
    subnetwork = var.subnetwork
    dynamic "access_config" {
      for_each = var.post_copy ? [google_compute_address.this[0].address] : []
      content {
        nat_ip = access_config.value
      }
    }
  }

  # GCE's Debian images have no cloud-init: the guest agent runs `startup-script` at every boot instead.
  metadata = {
    startup-script         = module.cloud_init.boot_script
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
  }

  service_account {
    email  = google_service_account.this.email
    scopes = ["cloud-platform"] # what it may do is its IAM roles above
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  depends_on = [google_storage_bucket_iam_member.objects, google_secret_manager_secret_iam_member.nats_credential]
}

resource "google_compute_firewall" "page_relay" {
  count         = local.page_relay && length(var.peer_cidrs) > 0 ? 1 : 0
  project       = var.project_id
  name          = "ums-page-relay-${var.agent_id}"
  network       = var.network
  direction     = "INGRESS"
  description   = "UMS post-copy page relay, from the deployment's own hosts only"
  source_ranges = var.peer_cidrs
  target_tags   = [local.tag]
  allow {
    protocol = "tcp"
    ports    = [local.relay_ports]
  }
}

resource "google_compute_firewall" "services" {
  count         = length(var.service_ingress.cidrs) > 0 && length(var.service_ingress.ports) > 0 ? 1 : 0
  project       = var.project_id
  name          = "ums-services-${var.agent_id}"
  network       = var.network
  direction     = "INGRESS"
  description   = "The ports this host's containers publish, from the services' frontmen only"
  source_ranges = var.service_ingress.cidrs
  target_tags   = [local.tag]
  allow {
    protocol = "tcp"
    ports    = [for p in var.service_ingress.ports : tostring(p)]
  }
}
