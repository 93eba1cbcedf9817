output "bucket" {
  description = "The bucket's name."
  value       = aws_s3_bucket.this.bucket
}

output "arn" {
  description = "The bucket's ARN (for IAM policies)."
  value       = aws_s3_bucket.this.arn
}

output "store_url" {
  description = "The store URL agents and functions use (UMS_STORE_URL)."
  value       = var.prefix == "" ? "s3://${aws_s3_bucket.this.bucket}" : "s3://${aws_s3_bucket.this.bucket}/${var.prefix}"
}

output "objects_arn" {
  description = "ARN pattern of the objects under the prefix (what a host's role may write)."
  value       = var.prefix == "" ? "${aws_s3_bucket.this.arn}/*" : "${aws_s3_bucket.this.arn}/${var.prefix}/*"
}

output "migrations_prefix" {
  description = "The key prefix the lifecycle rule expires."
  value       = local.migrations_prefix
}

output "prefix" {
  description = "UMS's key prefix in the bucket (\"\" for the root): what a role's ListBucket condition and object ARNs are built from."
  value       = var.prefix
}
