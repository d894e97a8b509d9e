# Example configuration for oci-distribution-terraform-registry.
#
# Copy it to one of the configuration directories (for example
# ~/.config/oci-distribution-terraform-registry/config.hcl or
# /etc/oci-distribution-terraform-registry/config.hcl), or pass it with
# --config=FILE. Relative file paths are relative to this file's directory.

server {
  # Address and port to listen on. Use "0.0.0.0:8443" or "[::]:8443" to accept
  # connections from other machines. Port 0 picks a free port (printed at start).
  listen_addr = "127.0.0.1:8443"

  # 32 random bytes as 64 hex characters (`openssl rand -hex 32`). Seals the
  # client's credentials into package download URLs when proxy_packages = true.
  # Give every instance behind one load balancer the same value. If omitted, a
  # random secret is generated at each start.
  query_string_secret = "0000000000000000000000000000000000000000000000000000000000000000"

  # How long a sealed download URL stays valid (default "3m").
  download_url_ttl = "3m"

  # When rotating query_string_secret, keep the old one here until download_url_ttl has
  # passed, so URLs handed out before the rotation keep working (reload with SIGHUP).
  # previous_query_string_secrets = ["<old 64 hex characters>"]

  # Serve /metrics, /healthz and /readyz on a separate plain-HTTP address instead.
  # admin_listen_addr = "127.0.0.1:9100"

  # Terraform only uses https:// mirrors. Without a tls block the server speaks
  # plain HTTP, for use behind a TLS-terminating proxy.
  tls {
    certificate_file = "cert.pem"
    private_key_file = "key.pem"
  }
}

# A provider network mirror, served at https://HOST/mirror/ .
provider_mirror "mirror" {
  # The URL of the OCI Distribution registry containing the packages.
  origin_url = "http://127.0.0.1:5000/"

  # The repository prefix under which providers are stored. The provider's
  # address is appended: registry.terraform.io/hashicorp/aws is looked up in
  # the repository terraform-providers/registry.terraform.io/hashicorp/aws.
  name_prefix = "terraform-providers"

  # When the registry needs credentials, Terraform sends its token for this
  # server (a `credentials` block in its CLI configuration) with its metadata
  # requests, and it is passed on to the registry. Terraform sends no
  # credentials with package downloads, so with proxy_packages = true the
  # download URLs carry the token sealed under query_string_secret.
  proxy_packages = true

  # public = true would instead serve this mirror's data to every client, fetched with the
  # server's own credential (docker config.json). It cannot be combined with proxy_packages.
}

# This host as a provider registry (https://HOST/.well-known/terraform.json, /v1/providers/):
# provider HOST/acme/widgets is read from the repository terraform-registry/providers/acme/widgets.
# Create the key with:
#   oci-distribution-terraform-registry keygen --private-key signing-key.asc --public-key signing-key.pub
# provider_registry {
#   origin_url       = "http://127.0.0.1:5000/"
#   name_prefix      = "terraform-registry/providers"
#   signing_key_file = "signing-key.asc"
# }

# This host as a module registry (/v1/modules/): module HOST/acme/network/aws at version V
# is the repository terraform-registry/modules/acme/network/aws, tag V.
# module_registry {
#   origin_url  = "http://127.0.0.1:5000/"
#   name_prefix = "terraform-registry/modules"
# }

# Hard bounds on clients and origins; every one has a safe default (README, "limits").
# limits {
#   max_request_header_bytes = "16KiB"
#   idle_timeout             = "60s"
#   max_connections          = 4096
#   max_origin_fetches       = 64     # per origin
#   max_package_size         = "4GiB"
#   origin_fetch_timeout     = "30m"
# }
