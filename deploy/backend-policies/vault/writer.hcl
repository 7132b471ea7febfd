# The broker's Vault policy: create, update, list and delete secrets in the
# KV v2 mount `secret` (change `secret/` to your `store.mount`, and append
# your `store.prefix` to narrow it), and never read a value.
#
# The broker never reads a value on the write path: it takes the current
# version from the metadata endpoint and writes with check-and-set. Task
# reads through the broker need `read` on data; a broker that serves task
# pods gets reader-scope.hcl for each scope as well (or `read` here).

# Write new versions (create for a new path, update for an existing one).
# No "read": the value can be written but not read back.
path "secret/data/*" {
  capabilities = ["create", "update"]
}

# Versions, timestamps and labels (custom_metadata): no values live here.
# "delete" on metadata removes every version (the broker's DELETE).
path "secret/metadata/*" {
  capabilities = ["create", "update", "read", "list", "delete"]
}

# Listing the mount's root (`GET /v1/secrets/`).
path "secret/metadata" {
  capabilities = ["list"]
}
