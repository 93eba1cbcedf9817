output "bucket" {
  description = "The bucket's name."
  value       = google_storage_bucket.this.name
}

output "store_url" {
  description = "The store URL agents and functions use (UMS_STORE_URL)."
  value       = var.prefix == "" ? "gs://${google_storage_bucket.this.name}" : "gs://${google_storage_bucket.this.name}/${var.prefix}"
}

output "migrations_prefix" {
  description = "The object prefix the lifecycle rule deletes."
  value       = local.migrations_prefix
}
