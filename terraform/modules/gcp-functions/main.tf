locals {
  # Not under /etc: Cloud Run refuses mounts over system directories.
  mount = "/ums-secrets"
  # Files the code reads by path: the broker credential and CA (core/nats-event-bus.ts), the command-signing
  # key (functions/function-context.ts). Cloud Run mounts each secret version as a file, never an env value.
  function_env = merge(
    {
      NATS_URL                     = var.nats_url
      UMS_NATS_CA                  = "${local.mount}/ca/ca.pem"
      UMS_NATS_CREDENTIALS         = "${local.mount}/nats/credential.json"
      UMS_COMMAND_SIGNING_KEY_FILE = "${local.mount}/signing/key.pem"
      UMS_SIGNED_URL_TTL_SECONDS   = tostring(var.signed_url_ttl_seconds)
      UMS_FUNCTION_AUTH            = "bridge-hmac"
      GOOGLE_CLOUD_PROJECT         = var.project_id
    },
    var.azure_storage_account == null ? {} : { AZURE_STORAGE_ACCOUNT = var.azure_storage_account },
    var.aws_region == null ? {} : { AWS_REGION = var.aws_region },
    # Keyless signing for the other clouds' stores with the functions' Google identity
    # (core/cloud-identity/keyless-store-access.ts): no key to keep for them then.
    var.aws_web_identity == null ? {} : {
      UMS_AWS_ROLE_ARN       = var.aws_web_identity.role_arn
      UMS_AWS_TOKEN_AUDIENCE = var.aws_web_identity.audience
    },
    var.azure_federation == null ? {} : {
      UMS_AZURE_CLIENT_ID      = var.azure_federation.client_id
      UMS_AZURE_TENANT_ID      = var.azure_federation.tenant_id
      UMS_AZURE_TOKEN_AUDIENCE = var.azure_federation.audience
    },
  )
  # Secrets the code reads from the environment.
  function_secret_env = merge(
    { UMS_FUNCTION_AUTH_KEY = var.secrets.function_auth_key },
    var.secrets.azure_storage_key == null ? {} : { AZURE_STORAGE_KEY = var.secrets.azure_storage_key },
    var.secrets.aws_access_key_id == null ? {} : { AWS_ACCESS_KEY_ID = var.secrets.aws_access_key_id },
    var.secrets.aws_secret_access_key == null ? {} : { AWS_SECRET_ACCESS_KEY = var.secrets.aws_secret_access_key },
  )
  function_secret_files = {
    ca      = { path = "${local.mount}/ca", file = "ca.pem", secret = var.secrets.nats_ca }
    nats    = { path = "${local.mount}/nats", file = "credential.json", secret = var.secrets.functions_nats_credential }
    signing = { path = "${local.mount}/signing", file = "key.pem", secret = var.secrets.command_signing_key }
  }
}

# --- identities ---------------------------------------------------------------------------------------------
resource "google_service_account" "functions" {
  project      = var.project_id
  account_id   = "ums-functions"
  display_name = "UMS functions"
}

resource "google_service_account" "bridge" {
  project      = var.project_id
  account_id   = "ums-bridge"
  display_name = "UMS trigger bridge"
}

# Signed GCS URLs without a key file: V4 signing through the IAM signBlob API as itself (core/object-stores/gcs-store.ts).
resource "google_service_account_iam_member" "functions_sign_blob" {
  service_account_id = google_service_account.functions.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.functions.email}"
}

# The functions read and delete checkpoints (verification, cleanup) in the GCS stores.
resource "google_storage_bucket_iam_member" "functions_objects" {
  for_each = toset(var.bucket_names)
  bucket   = each.value
  role     = "roles/storage.objectUser"
  member   = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_secret_manager_secret_iam_member" "functions" {
  for_each  = toset(concat([for f in local.function_secret_files : f.secret], values(local.function_secret_env)))
  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_secret_manager_secret_iam_member" "bridge" {
  for_each  = toset([var.secrets.nats_ca, var.secrets.bridge_nats_credential, var.secrets.function_auth_key])
  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.bridge.email}"
}

# Gen2 functions reach private addresses (the broker) through a connector (the provider has no Direct VPC
# egress for them); only private ranges go through it.
resource "google_vpc_access_connector" "functions" {
  project       = var.project_id
  region        = var.region
  name          = "ums-functions"
  network       = var.network
  ip_cidr_range = var.vpc_connector_cidr
  min_instances = 2
  max_instances = 3
}

# --- the functions: Cloud Run functions (gen2), HTTP, warm ----------------------------------------------------
resource "google_cloudfunctions2_function" "this" {
  for_each = var.functions
  project  = var.project_id
  location = var.region
  name     = "ums-${lower(replace(each.key, "/([A-Z])/", "-$1"))}"
  labels   = var.labels

  build_config {
    runtime     = var.runtime
    entry_point = each.value
    source {
      storage_source {
        bucket = var.source_bucket
        object = var.source_object
      }
    }
    # The archive carries dist/ already built: the buildpack installs the production dependencies only
    # (the lockfile names the dev ones too, so package.json keeps them for `npm ci` to agree with it) and
    # runs no package.json script.
    environment_variables = {
      GOOGLE_NODE_RUN_SCRIPTS = ""
      NPM_CONFIG_OMIT         = "dev"
    }
  }

  service_config {
    min_instance_count               = var.min_instances
    max_instance_count               = var.max_instances
    available_memory                 = "512Mi"
    available_cpu                    = "1"
    timeout_seconds                  = 120
    max_instance_request_concurrency = 8
    service_account_email            = google_service_account.functions.email
    # Only the bridge (through the VPC) reaches them; the bridge's HMAC token is checked on every request.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    environment_variables          = local.function_env
    vpc_connector                  = google_vpc_access_connector.functions.id
    vpc_connector_egress_settings  = "PRIVATE_RANGES_ONLY"

    dynamic "secret_environment_variables" {
      for_each = local.function_secret_env
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }

    dynamic "secret_volumes" {
      for_each = local.function_secret_files
      content {
        mount_path = secret_volumes.value.path
        project_id = var.project_id
        secret     = secret_volumes.value.secret
        versions {
          path    = secret_volumes.value.file
          version = "latest"
        }
      }
    }
  }

  lifecycle {
    # One way per cloud: with the keyless identity the functions use no key, so a key secret would only be
    # a secret to keep for nothing.
    precondition {
      condition     = var.azure_federation == null || var.secrets.azure_storage_key == null
      error_message = "Set azure_federation or secrets.azure_storage_key, not both: with the federation the functions use no Azure key."
    }
    precondition {
      condition     = var.aws_web_identity == null || (var.secrets.aws_access_key_id == null && var.secrets.aws_secret_access_key == null)
      error_message = "Set aws_web_identity or secrets.aws_access_key_id/aws_secret_access_key, not both: with the web identity the functions use no AWS key."
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.functions]
}

# Only the bridge may invoke the functions: it sends an ID token of its own service account for each
# function's URL (UMS_FUNCTION_ID_TOKEN=metadata, bridge/function-request-auth.ts), which Cloud Run checks
# against this grant before the function runs. Ingress stays internal (the VPC only), and each function still
# checks the bridge's HMAC token after the platform (functions/http-trigger.ts): three independent gates.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = google_cloudfunctions2_function.this
  project  = var.project_id
  location = var.region
  name     = each.value.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.bridge.email}"
}

# --- the trigger bridge: a long-running JetStream consumer with a scheduler tick ----------------------------
resource "google_cloud_run_v2_service" "bridge" {
  project  = var.project_id
  location = var.region
  name     = "ums-trigger-bridge"
  ingress  = "INGRESS_TRAFFIC_INTERNAL_ONLY" # it serves nothing; it only calls out
  labels   = var.labels

  template {
    service_account = google_service_account.bridge.email
    # Exactly one, always on: the bridge's durable consumers and its tick must never stop, and two bridges
    # would deliver every event twice.
    scaling {
      min_instance_count = 1
      max_instance_count = 1
    }
    vpc_access {
      network_interfaces {
        network    = var.network
        subnetwork = var.subnetwork
      }
      egress = "ALL_TRAFFIC" # the internal-only functions and the private broker
    }
    containers {
      image   = var.bridge_image
      command = ["node"]
      args    = ["dist/bridge/main.js"]
      resources {
        limits   = { cpu = "1", memory = "512Mi" }
        cpu_idle = false # CPU always allocated: it works between requests (it never gets any)
      }
      env {
        name  = "NATS_URL"
        value = var.nats_url
      }
      env {
        name  = "UMS_NATS_CA"
        value = "${local.mount}/ca/ca.pem"
      }
      env {
        name  = "UMS_NATS_CREDENTIALS"
        value = "${local.mount}/nats/credential.json"
      }
      env {
        name  = "UMS_FUNCTION_AUTH"
        value = "bridge-hmac"
      }
      # An ID token of the bridge's service account with every request, from the metadata server, for
      # Cloud Run's run.invoker check (granted to this account alone, above).
      env {
        name  = "UMS_FUNCTION_ID_TOKEN"
        value = "metadata"
      }
      env {
        name  = "UMS_SUPERVISE_EVERY_SECONDS"
        value = tostring(var.supervise_every_seconds)
      }
      env {
        name  = "UMS_FUNCTION_ENDPOINTS"
        value = jsonencode({ for name, fn in google_cloudfunctions2_function.this : name => fn.service_config[0].uri })
      }
      env {
        name = "UMS_FUNCTION_AUTH_KEY"
        value_source {
          secret_key_ref {
            secret  = var.secrets.function_auth_key
            version = "latest"
          }
        }
      }
      volume_mounts {
        name       = "ca"
        mount_path = "${local.mount}/ca"
      }
      volume_mounts {
        name       = "nats"
        mount_path = "${local.mount}/nats"
      }
    }
    volumes {
      name = "ca"
      secret {
        secret = var.secrets.nats_ca
        items {
          path    = "ca.pem"
          version = "latest"
        }
      }
    }
    volumes {
      name = "nats"
      secret {
        secret = var.secrets.bridge_nats_credential
        items {
          path    = "credential.json"
          version = "latest"
          mode    = 256 # 0400
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.bridge]
}

# --- the cloud notice ingress: the clouds' event services call it, not the bridge ---------------------------
# functions/cloud-notice-ingress.ts, deployed twice from the same entry point when cloud_notices is set:
#  - "public": Event Grid (Azure) and EventBridge (AWS) deliver from outside Google, so Cloud Run lets anyone
#    invoke it (they have no Google identity to present) and the function authenticates every delivery with the
#    notice key (X-UMS-Notice-Key, secret cloud_notices.key_secret) before it reads anything;
#  - "eventarc": Eventarc cannot send that header; it sends a Google OIDC token of the trigger's service account,
#    which Cloud Run checks (run.invoker for that account alone, internal ingress) before the function runs
#    (UMS_CLOUD_NOTICE_AUTH=cloud-run-iam: it then serves /eventarc only).
# Neither signs commands nor opens a store: their identity reads the broker's CA, the functions' broker credential
# (they state facts as the functions) and the key, nothing else.
locals {
  notice_ingresses = var.cloud_notices == null ? {} : merge(
    var.cloud_notices.public ? { public = { auth = "notice-key", ingress = "ALLOW_ALL" } } : {},
    var.cloud_notices.eventarc ? { eventarc = { auth = "cloud-run-iam", ingress = "ALLOW_INTERNAL_ONLY" } } : {},
  )
  notice_ingress_env = {
    NATS_URL             = var.nats_url
    UMS_NATS_CA          = "${local.mount}/ca/ca.pem"
    UMS_NATS_CREDENTIALS = "${local.mount}/nats/credential.json"
    GOOGLE_CLOUD_PROJECT = var.project_id
  }
  notice_ingress_secret_files = {
    ca   = local.function_secret_files.ca
    nats = local.function_secret_files.nats
  }
  # Compute Engine's system events the ingress turns into notices (functions/cloud-notices/gcp-eventarc.ts,
  # METHODS; test/unit/terraform-static.test.ts compares the two).
  notice_methods = [
    "compute.instances.preempted",
    "compute.instances.terminateOnHostMaintenance",
    "compute.instances.hostError",
    "compute.instances.migrateOnHostMaintenance",
  ]
}

resource "google_service_account" "notice_ingress" {
  count        = var.cloud_notices == null ? 0 : 1
  project      = var.project_id
  account_id   = "ums-notice-ingress"
  display_name = "UMS cloud notice ingress"
}

resource "google_secret_manager_secret_iam_member" "notice_ingress" {
  for_each  = var.cloud_notices == null ? toset([]) : toset([var.secrets.nats_ca, var.secrets.functions_nats_credential, var.cloud_notices.key_secret])
  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.notice_ingress[0].email}"
}

resource "google_cloudfunctions2_function" "notice_ingress" {
  for_each = local.notice_ingresses
  project  = var.project_id
  location = var.region
  name     = each.key == "public" ? "ums-cloud-notice-ingress" : "ums-cloud-notice-ingress-${each.key}"
  labels   = var.labels

  build_config {
    runtime     = var.runtime
    entry_point = "cloudNoticeIngress"
    source {
      storage_source {
        bucket = var.source_bucket
        object = var.source_object
      }
    }
    environment_variables = {
      GOOGLE_NODE_RUN_SCRIPTS = ""
      NPM_CONFIG_OMIT         = "dev"
    }
  }

  service_config {
    # Notices are rare and a spot VM has 30 s to 2 min: one warm instance, so none waits for a cold start.
    min_instance_count               = 1
    max_instance_count               = 3
    available_memory                 = "256Mi"
    available_cpu                    = "1"
    timeout_seconds                  = 60
    max_instance_request_concurrency = 8
    service_account_email            = google_service_account.notice_ingress[0].email
    ingress_settings                 = each.value.ingress
    all_traffic_on_latest_revision   = true
    environment_variables            = merge(local.notice_ingress_env, { UMS_CLOUD_NOTICE_AUTH = each.value.auth })
    vpc_connector                    = google_vpc_access_connector.functions.id
    vpc_connector_egress_settings    = "PRIVATE_RANGES_ONLY"

    # The key only where it is checked.
    dynamic "secret_environment_variables" {
      for_each = each.value.auth == "notice-key" ? { UMS_CLOUD_NOTICE_KEY = var.cloud_notices.key_secret } : {}
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }

    dynamic "secret_volumes" {
      for_each = local.notice_ingress_secret_files
      content {
        mount_path = secret_volumes.value.path
        project_id = var.project_id
        secret     = secret_volumes.value.secret
        versions {
          path    = secret_volumes.value.file
          version = "latest"
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.notice_ingress]
}

# Event Grid and EventBridge hold no Google identity: the platform admits any caller, the function admits only
# a delivery with the notice key (and answers 401 before reading anything of any other).
resource "google_cloud_run_v2_service_iam_member" "notice_ingress_public" {
  count    = contains(keys(local.notice_ingresses), "public") ? 1 : 0
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.notice_ingress["public"].service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Compute Engine's system events reach Eventarc through a Logging sink and a Pub/Sub topic: the sink's filter
# takes the system-event log by method, in one place (Eventarc's audit-log triggers match one method each).
resource "google_pubsub_topic" "cloud_notices" {
  count   = contains(keys(local.notice_ingresses), "eventarc") ? 1 : 0
  project = var.project_id
  name    = "ums-cloud-notices"
  labels  = var.labels
  # A notice is moot after a day (a preempted VM has 30 s).
  message_retention_duration = "86400s"
}

resource "google_logging_project_sink" "cloud_notices" {
  count                  = contains(keys(local.notice_ingresses), "eventarc") ? 1 : 0
  project                = var.project_id
  name                   = "ums-cloud-notices"
  destination            = "pubsub.googleapis.com/${google_pubsub_topic.cloud_notices[0].id}"
  unique_writer_identity = true
  filter = join(" AND ", [
    "logName=\"projects/${var.project_id}/logs/cloudaudit.googleapis.com%2Fsystem_event\"",
    "resource.type=\"gce_instance\"",
    "protoPayload.methodName=(${join(" OR ", [for m in local.notice_methods : "\"${m}\""])})",
  ])
}

resource "google_pubsub_topic_iam_member" "cloud_notices_sink" {
  count   = contains(keys(local.notice_ingresses), "eventarc") ? 1 : 0
  project = var.project_id
  topic   = google_pubsub_topic.cloud_notices[0].name
  role    = "roles/pubsub.publisher"
  member  = google_logging_project_sink.cloud_notices[0].writer_identity
}

resource "google_service_account" "notice_trigger" {
  count        = contains(keys(local.notice_ingresses), "eventarc") ? 1 : 0
  project      = var.project_id
  account_id   = "ums-notice-trigger"
  display_name = "UMS Eventarc trigger of the cloud notice ingress"
}

# The trigger's identity alone may invoke the Eventarc ingress: Cloud Run checks its OIDC token.
resource "google_cloud_run_v2_service_iam_member" "notice_ingress_eventarc" {
  count    = contains(keys(local.notice_ingresses), "eventarc") ? 1 : 0
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.notice_ingress["eventarc"].service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.notice_trigger[0].email}"
}

resource "google_eventarc_trigger" "cloud_notices" {
  count           = contains(keys(local.notice_ingresses), "eventarc") ? 1 : 0
  project         = var.project_id
  location        = var.region
  name            = "ums-cloud-notices"
  labels          = var.labels
  service_account = google_service_account.notice_trigger[0].email
  matching_criteria {
    attribute = "type"
    value     = "google.cloud.pubsub.topic.v1.messagePublished"
  }
  transport {
    pubsub {
      topic = google_pubsub_topic.cloud_notices[0].id
    }
  }
  destination {
    cloud_run_service {
      service = google_cloudfunctions2_function.notice_ingress["eventarc"].service_config[0].service
      region  = var.region
      path    = "/eventarc"
    }
  }
  depends_on = [google_cloud_run_v2_service_iam_member.notice_ingress_eventarc]
}
