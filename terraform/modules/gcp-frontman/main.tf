/*
 * The frontman: the stable address of migratable services. It runs on a VM of its own, none of the services'
 * hosts: a host being evacuated would take its frontman with it, and switching DNS or a load balancer
 * cannot hold requests while a service is frozen. Clients point at this VM's static address; the frontman
 * holds their requests through a migration and forwards them to whichever host runs the service after it
 * (the host's UMS_SERVICE_ADDRESS and the port its container publishes).
 */
locals {
  tag = "ums-frontman-${var.frontman_id}"
  # Each service's listen port: the one clients use on the frontman's address (by default the published port).
  listen_ports = { for s in var.services : s.container => coalesce(s.listen_port, s.port) }
}

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = substr("ums-${var.frontman_id}", 0, 30)
  display_name = "UMS frontman ${var.frontman_id}"
}

# Its broker credential ({"principal": "frontman", "seed": ...}) and nothing else.
resource "google_secret_manager_secret_iam_member" "nats_credential" {
  project   = var.project_id
  secret_id = var.nats_credential_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

resource "google_compute_address" "this" {
  project = var.project_id
  region  = var.region
  name    = "ums-${var.frontman_id}"
}

# The agent hosts' install, secret fetching and boot, with the ums-frontman unit (frontman/main.ts).
module "cloud_init" {
  source = "../agent-cloud-init"

  cloud       = "gcp"
  region      = var.region
  nats_url    = var.nats_url
  nats_ca_pem = var.nats_ca_pem
  secrets     = { nats_credential = var.nats_credential_secret_id, project = var.project_id }
  log_level   = var.log_level
  frontman = {
    id = var.frontman_id
    # It binds every interface: GCE maps the static external address onto the VM's internal one.
    services = [for s in var.services : {
      container    = s.container
      protocol     = s.protocol
      listen       = "0.0.0.0:${local.listen_ports[s.container]}"
      port         = s.port
      hold_seconds = s.hold_seconds
    }]
    hold_seconds  = var.hold_seconds
    drain_seconds = var.drain_seconds
    max_held      = var.max_held
    max_held_mib  = var.max_held_mib
    max_body_kib  = var.max_body_kib
  }
  release_url    = var.release_url
  release_sha256 = var.release_sha256
}

resource "google_compute_instance" "this" {
  project      = var.project_id
  zone         = var.zone
  name         = "ums-${var.frontman_id}"
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
    access_config {
      nat_ip = google_compute_address.this.address
    }
  }

  # GCE's Debian images have no cloud-init: the guest agent runs `startup-script` at every boot (idempotent).
  metadata = {
    startup-script         = module.cloud_init.boot_script
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
  }

  service_account {
    email  = google_service_account.this.email
    scopes = ["cloud-platform"] # what it may do is its IAM role above
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  depends_on = [google_secret_manager_secret_iam_member.nats_credential]
}

# In: the services' listen ports, from the clients only.
resource "google_compute_firewall" "clients" {
  project       = var.project_id
  name          = "ums-${var.frontman_id}-clients"
  network       = var.network
  direction     = "INGRESS"
  description   = "UMS frontman: the fronted services' listen ports, from their clients"
  source_ranges = var.client_cidrs
  target_tags   = [local.tag]
  allow {
    protocol = "tcp"
    ports    = distinct([for s in var.services : tostring(local.listen_ports[s.container])])
  }
}

# Out: the broker, the hosts' published ports, HTTPS/HTTP (Debian's mirrors, the release, Secret Manager),
# and nothing else (the metadata server, which also answers DNS, is never filtered by GCE's firewall).
resource "google_compute_firewall" "egress_broker" {
  project            = var.project_id
  name               = "ums-${var.frontman_id}-to-broker"
  network            = var.network
  direction          = "EGRESS"
  priority           = 1000
  description        = "UMS frontman: the broker's client port"
  destination_ranges = var.broker_cidrs
  target_tags        = [local.tag]
  allow {
    protocol = "tcp"
    ports    = [tostring(var.broker_port)]
  }
}

resource "google_compute_firewall" "egress_hosts" {
  project            = var.project_id
  name               = "ums-${var.frontman_id}-to-hosts"
  network            = var.network
  direction          = "EGRESS"
  priority           = 1000
  description        = "UMS frontman: the ports the services' containers publish on the deployment's hosts"
  destination_ranges = var.host_cidrs
  target_tags        = [local.tag]
  allow {
    protocol = "tcp"
    ports    = distinct([for s in var.services : tostring(s.port)])
  }
}

resource "google_compute_firewall" "egress_web" {
  project            = var.project_id
  name               = "ums-${var.frontman_id}-to-web"
  network            = var.network
  direction          = "EGRESS"
  priority           = 1000
  description        = "UMS frontman: packages, the release and Google APIs (Secret Manager)"
  destination_ranges = ["0.0.0.0/0"]
  target_tags        = [local.tag]
  allow {
    protocol = "tcp"
    ports    = ["80", "443"]
  }
}

resource "google_compute_firewall" "egress_deny" {
  project            = var.project_id
  name               = "ums-${var.frontman_id}-deny-out"
  network            = var.network
  direction          = "EGRESS"
  priority           = 65000
  description        = "UMS frontman: nothing else goes out"
  destination_ranges = ["0.0.0.0/0"]
  target_tags        = [local.tag]
  deny {
    protocol = "all"
  }
}
