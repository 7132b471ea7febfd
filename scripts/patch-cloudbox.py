"""Applies the small fixes cloudbox 0.2.3's Secret Manager needs to serve the
Rust SDK on this machine's Python (run by `scripts/backends install gcp`).

1. `from __future__ import annotations` atop core/store.py (it uses 3.10+
   annotation syntax that cloudbox's declared Python >= 3.14 evaluates lazily).
2. `GET .../versions/{v}:access` answers like the POST it already serves:
   the real API and the Rust SDK use GET.
3. `pageSize <= 0` means the default page (the Rust SDK sends 0, which
   otherwise pages forever).
4. Secrets keep `annotations` on create, and `PATCH` applies `updateMask`
   (labels, annotations) as the real API does, so a field can be cleared.

Idempotent: each fix checks whether it is already in place.
"""
import pathlib
import sys

root = pathlib.Path(sys.argv[1])


def patch(rel, old, new, marker):
    p = root / rel
    s = p.read_text()
    if marker in s:
        return
    if old not in s:
        sys.exit(f"patch-cloudbox: `{rel}` does not have the expected text; wrong cloudbox version?")
    p.write_text(s.replace(old, new, 1))


# 1
store = root / "core/store.py"
s = store.read_text()
if "from __future__ import annotations" not in s:
    store.write_text("from __future__ import annotations\n" + s)

app = "services/secretmanager/app.py"
# 2
patch(
    app,
    'async def get_version(project: str, secret_id: str, version_id: str):\n',
    'async def get_version(project: str, secret_id: str, version_id: str):\n'
    '    if version_id.endswith(":access"):  # secret-broker fix 2\n'
    '        return await access_version(project, secret_id, version_id[: -len(":access")])\n',
    "secret-broker fix 2",
)
# 3 (two list handlers)
for fn in ("list_secrets", "list_versions"):
    s = (root / app).read_text()
    marker = f"secret-broker fix 3 {fn}"
    if marker in s:
        continue
    head = s.index(f"async def {fn}(")
    body = s.index("):\n", head) + 3
    s = s[:body] + f"    if pageSize <= 0:  # {marker}\n        pageSize = 25\n" + s[body:]
    (root / app).write_text(s)
# 4
patch(
    "services/secretmanager/models.py",
    "    labels: dict[str, str] = Field(default_factory=dict)\n    etag: str = \"1\"\n",
    "    labels: dict[str, str] = Field(default_factory=dict)\n"
    "    annotations: dict[str, str] = Field(default_factory=dict)  # secret-broker fix 4\n"
    "    etag: str = \"1\"\n",
    "secret-broker fix 4",
)
patch(
    app,
    '        labels=body.get("labels", {}),\n    )\n',
    '        labels=body.get("labels", {}),\n'
    '        annotations=body.get("annotations", {}),  # secret-broker fix 4\n    )\n',
    "annotations=body.get",
)
patch(
    app,
    '    body = await request.json()\n    if "labels" in body:\n        data["labels"] = body["labels"]\n',
    '    body = await request.json()\n'
    '    mask = request.query_params.get("updateMask", "")  # secret-broker fix 4\n'
    '    if mask:\n'
    '        for field in mask.split(","):\n'
    '            if field.strip() in ("labels", "annotations"):\n'
    '                data[field.strip()] = body.get(field.strip(), {})\n'
    '    elif "labels" in body:\n        data["labels"] = body["labels"]\n',
    'secret-broker fix 4\n    if mask',
)
