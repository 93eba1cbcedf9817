locals {
  nats_conf = templatefile("${path.module}/templates/nats.conf.tftpl", {
    server_name        = var.server_name
    listen_address     = var.listen_address
    client_port        = var.client_port
    cluster_port       = var.cluster_port
    cluster_name       = var.cluster_name
    routes             = var.routes
    cert_file          = var.cert_file
    key_file           = var.key_file
    ca_file            = var.ca_file
    store_dir          = var.store_dir
    max_file_store_gib = var.max_file_store_gib
    authorization      = trimspace(var.authorization)
  })
}
