mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  name = "ums-checkpoints-example"
}

run "private_encrypted_and_expiring" {
  command = apply
  assert {
    condition     = aws_s3_bucket_public_access_block.this.block_public_acls && aws_s3_bucket_public_access_block.this.restrict_public_buckets
    error_message = "the bucket must block every public access"
  }
  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).sse_algorithm == "AES256"
    error_message = "without a KMS key the bucket is encrypted with S3-managed keys"
  }
  assert {
    condition     = one(aws_s3_bucket_lifecycle_configuration.this.rule[0].filter).prefix == "ums/migrations/"
    error_message = "the lifecycle rule must expire <prefix>/migrations/"
  }
  assert {
    condition     = output.store_url == "s3://ums-checkpoints-example/ums"
    error_message = "the store URL must name the bucket and prefix"
  }
}

run "kms_and_root_prefix" {
  command = plan
  variables {
    prefix      = ""
    kms_key_arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
  }
  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms"
    error_message = "a KMS key means SSE-KMS"
  }
  assert {
    condition     = local.migrations_prefix == "migrations/"
    error_message = "at the root the prefix is migrations/"
  }
}

run "dotted_names_are_refused" {
  command = plan
  variables {
    name = "ums.checkpoints"
  }
  expect_failures = [var.name]
}
