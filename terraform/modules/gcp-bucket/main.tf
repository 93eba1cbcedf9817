locals {
  # core/checkpoint-artifact.ts artifactPrefix(): migrations/<id>/ below the store's prefix
  # (test/unit/terraform-static.test.ts compares the two).
  migrations_prefix = var.prefix == "" ? "migrations/" : "${var.prefix}/migrations/"
}

resource "google_storage_bucket" "this" {
  project       = var.project_id
  name          = var.name
  location      = var.location
  force_destroy = var.force_destroy
  labels        = var.labels

  # Private: IAM only (no ACLs), and never public whatever IAM says.
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      age            = var.abandoned_after_days
      matches_prefix = [local.migrations_prefix]
    }
    action {
      type = "Delete"
    }
  }

  # Checkpoints are transient: no versions kept, no soft-deleted copies billed for a week.
  versioning {
    enabled = false
  }
  soft_delete_policy {
    retention_duration_seconds = 0
  }
}
