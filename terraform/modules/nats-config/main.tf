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

  key_secret = var.key_secret == null ? { project = "", secret = "" } : var.key_secret

  # What a broker VM's boot writes (contents base64-encoded: nothing can end a heredoc), then its service.
  files = concat(
    [
      { path = "/etc/nats/nats.conf", mode = "0644", content = local.nats_conf },
      { path = "/etc/systemd/system/ums-nats.service", mode = "0644", content = templatefile("${path.module}/templates/ums-nats.service.tftpl", { key_dir = dirname(var.key_file) }) },
      {
        path    = "/usr/local/libexec/ums/ums-nats-key"
        mode    = "0755"
        content = templatefile("${path.module}/templates/ums-nats-key.sh.tftpl", { project = local.key_secret.project, secret = local.key_secret.secret, key_file = var.key_file })
      },
    ],
    var.server_cert_pem == "" ? [] : [{ path = var.cert_file, mode = "0644", content = var.server_cert_pem }],
    var.ca_pem == "" ? [] : [{ path = var.ca_file, mode = "0644", content = var.ca_pem }],
  )

  boot_script = join("\n", concat(
    [
      "#!/usr/bin/env bash",
      "# UMS broker boot (terraform/modules/nats-config): nats-server, its files, the service. Idempotent.",
      "set -euo pipefail",
      "export DEBIAN_FRONTEND=noninteractive",
      "command -v nats-server >/dev/null || { apt-get update -qq && apt-get install -y -qq nats-server curl jq; }",
      # Debian's own unit would start a server without TLS or users: only ours runs.
      "systemctl disable --now nats-server.service 2>/dev/null || true",
    ],
    flatten([for f in local.files : [
      "install -d -m 0755 '${dirname(f.path)}'",
      "printf '%s' '${base64encode(f.content)}' | base64 -d >'${f.path}'",
      "chmod ${f.mode} '${f.path}'",
    ]]),
    ["systemctl daemon-reload", "systemctl enable ums-nats.service", "systemctl restart ums-nats.service", ""],
  ))
}
