//! Each call's table as a W&B `run_table` artifact, as W&B's client logs
//! every `wandb.Table` (`wandb/sdk/data_types/utils.py`, `_log_table_artifact`;
//! the upload in `core/pkg/artifacts/saver.go`): without it a table is absent
//! from the run's Artifacts tab and lineage, and W&B resolves tables through
//! the history value's `artifact_path`.
//!
//! The artifact `run-<run>-<key>` (sanitised as W&B does) holds the table as
//! `<key>.table.json` — with `column_types` and image cells pointing at
//! `media/images/<md5[..20]>.png` inside the artifact — and those images. Its
//! client ids are derived from the run and the key, so the history line that
//! names them is a pure function of the log like every other line, and its
//! digest (MD5 over the manifest entries) lets the server find a committed
//! copy: an upload again, or after a lost state, creates no second version.

use super::*;
use crate::format::names;
use base64::Engine;
use md5::{Digest, Md5};

const CREATE_ARTIFACT: &str = "mutation CreateArtifact($input: CreateArtifactInput!) { \
createArtifact(input: $input) { artifact { id state artifactSequence { latestArtifact { id } } } } }";

const CREATE_ARTIFACT_MANIFEST: &str = "mutation CreateArtifactManifest($artifactID: ID!, \
$baseArtifactID: ID, $name: String!, $digest: String!, $entityName: String!, \
$projectName: String!, $runName: String!, $manifestType: ArtifactManifestType!, \
$includeUpload: Boolean!) { createArtifactManifest(input: {artifactID: $artifactID, \
baseArtifactID: $baseArtifactID, name: $name, digest: $digest, entityName: $entityName, \
projectName: $projectName, runName: $runName, type: $manifestType}) { artifactManifest { id \
file { id uploadUrl @include(if: $includeUpload) uploadHeaders @include(if: $includeUpload) } } } }";

const CREATE_ARTIFACT_FILES: &str =
    "mutation CreateArtifactFiles($input: CreateArtifactFilesInput!) { \
createArtifactFiles(input: $input) { files { edges { node { storagePath uploadUrl uploadHeaders \
uploadMultipartUrls { uploadID uploadUrlParts { partNumber uploadUrl } } \
artifact { id } } } } } }";

const COMMIT_ARTIFACT: &str = "mutation CommitArtifact($artifactID: ID!) { \
commitArtifact(input: {artifactID: $artifactID}) { artifact { id digest } } }";

/// The name W&B gives the artifact of a table logged under `key` in run
/// `run`: `run-<run>-<key>`, with characters outside `[A-Za-z0-9_.-]`
/// dropped and, when any were, a `-<CRC-32 in URL-safe base64>` suffix
/// (W&B's `sanitize_artifact_name`).
pub(super) fn table_artifact_name(run: &str, key: &str) -> String {
    let name = format!("run-{run}-{key}");
    let kept: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-.".contains(*c))
        .collect();
    if kept == name {
        return name;
    }
    let crc = crc32fast::hash(name.as_bytes()).to_be_bytes();
    let suffix = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crc);
    format!("{kept}-{suffix}")
}

/// A 128-character id of `[a-z0-9]` (the form of W&B's client ids), derived
/// from `parts`: the same table always gets the same ids.
fn derived_id(parts: &[&str]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(128);
    let mut block = 0u32;
    while out.len() < 128 {
        let mut h = sha2::Sha256::new();
        for p in parts {
            sha2::Digest::update(&mut h, p.as_bytes());
            sha2::Digest::update(&mut h, [0u8]);
        }
        sha2::Digest::update(&mut h, block.to_be_bytes());
        for b in sha2::Digest::finalize(h) {
            if out.len() < 128 {
                out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
        block += 1;
    }
    out
}

/// The ids of the artifact version and of its sequence (collection).
fn client_ids(run: &str, key: &str) -> (String, String) {
    (
        derived_id(&["difflog-run-table", run, key]),
        derived_id(&["difflog-run-table-sequence", run, key]),
    )
}

/// The table's path inside its artifact.
fn entry_name(key: &str) -> String {
    format!("{key}.table.json")
}

/// What the history value of a table logged under `key` carries beside
/// the run file: `artifact_path`, `_latest_artifact_path` and `log_mode`, as
/// W&B's client writes them (`wandb-client-artifact://` ids the server maps
/// to the artifact it committed).
pub(super) fn artifact_fields(run: &str, key: &str) -> [(&'static str, Value); 3] {
    let (id, seq) = client_ids(run, key);
    let entry = entry_name(key);
    [
        (
            "artifact_path",
            json!(format!("wandb-client-artifact://{id}/{entry}")),
        ),
        (
            "_latest_artifact_path",
            json!(format!("wandb-client-artifact://{seq}:latest/{entry}")),
        ),
        ("log_mode", json!("IMMUTABLE")),
    ]
}

/// W&B's file digest: base64 of the MD5.
fn b64_md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

/// One file of an artifact.
struct Entry {
    name: String,
    bytes: Vec<u8>,
    digest: String,
}

/// W&B's type of a column (`wandb/sdk/data_types/_dtypes.py`): the union of
/// `none` and what its cells hold.
fn column_type(kinds: &std::collections::BTreeSet<&'static str>) -> Value {
    if kinds.contains("image-file") {
        let unset = || json!({"params": {"is_set": false, "val": {}}, "wb_type": "const"});
        let image = json!({"params": {
            "box_class_maps": unset(), "box_layers": unset(),
            "box_score_keys": {"params": {"is_set": true, "val": []}, "wb_type": "const"},
            "class_map": unset(), "mask_class_maps": unset(), "mask_layers": unset(),
        }, "wb_type": "image-file"});
        return json!({"params": {"allowed_types": [image, {"wb_type": "none"}]}, "wb_type": "union"});
    }
    let mut allowed = vec![json!({"wb_type": "none"})];
    allowed.extend(kinds.iter().map(|k| json!({"wb_type": k})));
    json!({"params": {"allowed_types": allowed}, "wb_type": "union"})
}

/// The artifact's files: the table (W&B's artifact form) and its images
/// and videos (each video as its MP4 or GIF, as its run file).
async fn entries(
    run: &Snapshot<'_>,
    call: &CallView,
    key: &str,
    gifs: &Gifs,
) -> SyncResult<Vec<Entry>> {
    let media: Vec<&MediaEvent> = call.media.iter().collect();
    gifs.derive(run.dir, &media).await?;
    let mut out: Vec<Entry> = Vec::new();
    let mut cell_of: HashMap<&str, (&'static str, Value)> = HashMap::new();
    for m in &call.media {
        if cell_of.contains_key(m.digest.as_str()) {
            continue;
        }
        let file = crate::read::run_file(run.dir, &m.path).map_err(|e| SyncError::local(&e))?;
        // A video goes as its MP4 or GIF; an image (or a video no GIF
        // could be made of) as the file recorded.
        let video = gifs.info(m);
        let bytes = match gifs.bytes(&file, m).await? {
            Some(gif) => gif.to_vec(),
            None => read_recorded(&file, m)?,
        };
        let md5 = Md5::digest(&bytes);
        let hex = crate::format::hex(&md5);
        let (name, cell) = match &video {
            Some(info) => {
                let name = format!("media/videos/{}.{}", &hex[..20], info.ext);
                // A cell shows the video; the caption is in the row.
                let cell = json!({"_type": "video-file", "path": name, "sha256": info.sha256,
                                  "width": info.width, "height": info.height});
                (name, ("video-file", cell))
            }
            None => {
                let name = format!("media/images/{}.{}", &hex[..20], m.format);
                let cell = json!({"_type": "image-file", "format": m.format, "height": m.height,
                                  "path": name, "sha256": m.digest, "width": m.width});
                (name, ("image-file", cell))
            }
        };
        cell_of.insert(&m.digest, cell);
        out.push(Entry {
            name,
            digest: base64::engine::general_purpose::STANDARD.encode(md5),
            bytes,
        });
    }
    let columns = &call.started.columns;
    let mut kinds: Vec<std::collections::BTreeSet<&'static str>> =
        vec![Default::default(); columns.len()];
    let mut data = Vec::new();
    for row in &call.rows {
        let mut cells = Vec::new();
        for (i, col) in columns.iter().enumerate() {
            let (kind, v) = match row.cells.iter().find(|c| c.column() == col) {
                Some(Cell::Text { value, .. }) => ("string", json!(value)),
                Some(Cell::Number { value, .. }) => ("number", Value::Number(value.clone())),
                Some(Cell::Image { digest, .. }) => cell_of
                    .get(digest.as_str())
                    .cloned()
                    .unwrap_or(("image-file", Value::Null)),
                // Autolog writes "" for an absent value.
                Some(Cell::Null { .. }) | None => ("string", json!("")),
            };
            kinds[i].insert(kind);
            cells.push(v);
        }
        data.push(Value::Array(cells));
    }
    let names: Vec<&str> = columns.iter().map(|c| column_name(c)).collect();
    let type_map: Map<String, Value> = names
        .iter()
        .zip(&kinds)
        .map(|(c, k)| (c.to_string(), column_type(k)))
        .collect();
    // Keys in sorted order, as W&B's client writes the file.
    let table = json!({
        "_type": "table",
        "column_types": {"params": {"type_map": type_map}, "wb_type": "typedDict"},
        "columns": names, "data": data, "log_mode": "IMMUTABLE",
        "ncols": columns.len(), "nrows": call.rows.len(),
    });
    let bytes = serde_json::to_vec(&table).unwrap_or_default();
    out.push(Entry {
        name: entry_name(key),
        digest: b64_md5(&bytes),
        bytes,
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The artifact digest W&B computes (`MANIFEST_MD5`): hex MD5 of a header
/// and every `name:digest` line, by name.
fn manifest_digest(entries: &[Entry]) -> String {
    let mut h = Md5::new();
    h.update(b"wandb-artifact-manifest-v1\n");
    for e in entries {
        h.update(format!("{}:{}\n", e.name, e.digest).as_bytes());
    }
    crate::format::hex(&h.finalize())
}

/// The collection and digest of `call`'s table artifact in W&B run `run`:
/// what `verify` expects the server to hold, committed.
pub(super) async fn expected_table_artifact(
    run: &Snapshot<'_>,
    call: &CallView,
    wandb_run: &str,
    gifs: &Gifs,
) -> SyncResult<(String, String)> {
    let key = names::table(&call.started.stage);
    let entries = entries(run, call, &key, gifs).await?;
    Ok((
        table_artifact_name(wandb_run, &key),
        manifest_digest(&entries),
    ))
}

impl Wandb {
    /// Logs `call`'s table as its run's `run_table` artifact (see the module
    /// comment); nothing new when the server has it committed already.
    ///
    /// The steps are many (six requests and a PUT per file) and must all
    /// succeed for the version to be committed, so a transient failure of
    /// any repeats the sequence — safe, since `CreateArtifact` finds the
    /// same pending version again — a few times before the pass gives up.
    pub(super) async fn upload_table_artifact(
        &self,
        cur: &Cursor,
        run: &Snapshot<'_>,
        call: &CallView,
    ) -> SyncResult<()> {
        let key = names::table(&call.started.stage);
        let entries = entries(run, call, &key, &self.gifs).await?;
        let policy = Policy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
            attempts: 4,
        };
        retry(
            policy,
            |_| self.save_artifact(cur, &key, &entries),
            |e: &SyncError| match e.class {
                crate::sync::retry::Class::Transient if !e.unreachable => {
                    Decision::Retry(e.retry_after)
                }
                _ => Decision::Stop,
            },
        )
        .await
    }

    /// One attempt at saving the table's artifact (W&B's `saver.go` order).
    async fn save_artifact(&self, cur: &Cursor, key: &str, entries: &[Entry]) -> SyncResult<()> {
        let collection = table_artifact_name(&cur.run, key);
        let Some(art) = self.create_artifact(cur, key, &collection, entries).await? else {
            return Ok(()); // committed already: the same table, uploaded before
        };
        match self.fill_artifact(cur, &art, &collection, entries).await {
            Ok(()) => Ok(()),
            // A step refused: the version may have been committed meanwhile
            // (another uploader of the same run, a pass whose answer was
            // lost). The digest lookup says; only then is it done.
            Err(e) if e.class == crate::sync::retry::Class::Permanent => {
                match self.create_artifact(cur, key, &collection, entries).await {
                    Ok(None) => {
                        tracing::debug!("{collection}: committed meanwhile ({e})");
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The manifest, the files and the commit of the pending version `art`.
    async fn fill_artifact(
        &self,
        cur: &Cursor,
        art: &Pending,
        collection: &str,
        entries: &[Entry],
    ) -> SyncResult<()> {
        let first = self.artifact_manifest(cur, art, "", false).await?;
        let manifest_id = first["createArtifactManifest"]["artifactManifest"]["id"].clone();
        let contents = self
            .upload_artifact_files(art, &manifest_id, collection, entries)
            .await?;
        let manifest_json = serde_json::to_vec(&json!({
            "version": 1, "storagePolicy": "wandb-storage-policy-v1",
            "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents,
        }))
        .unwrap_or_default();
        let second = self
            .artifact_manifest(cur, art, &b64_md5(&manifest_json), true)
            .await?;
        let file = &second["createArtifactManifest"]["artifactManifest"]["file"];
        let url = file["uploadUrl"].as_str().ok_or_else(|| {
            SyncError::permanent(format!(
                "W&B gave no upload URL for the manifest of {collection}"
            ))
        })?;
        self.storage
            .send_with(
                Method::PUT,
                url,
                &headers_of(&file["uploadHeaders"]),
                Body::Bytes(&manifest_json, None),
            )
            .await?;
        self.gql(
            "CommitArtifact",
            COMMIT_ARTIFACT,
            json!({"artifactID": art.id}),
        )
        .await?;
        Ok(())
    }

    /// `CreateArtifact`: the pending version to fill, or `None` when the
    /// server has this digest committed in the collection already.
    async fn create_artifact(
        &self,
        cur: &Cursor,
        key: &str,
        collection: &str,
        entries: &[Entry],
    ) -> SyncResult<Option<Pending>> {
        let (client_id, sequence_id) = client_ids(&cur.run, key);
        let data = self
            .gql(
                "CreateArtifact",
                CREATE_ARTIFACT,
                json!({"input": {
                    "entityName": cur.entity, "projectName": cur.project, "runName": cur.run,
                    "artifactTypeName": "run_table", "artifactCollectionName": collection,
                    "aliases": [{"alias": "latest", "artifactCollectionName": collection}],
                    "digest": manifest_digest(entries), "digestAlgorithm": "MANIFEST_MD5",
                    "enableDigestDeduplication": true,
                    "clientID": client_id, "sequenceClientID": sequence_id,
                }}),
            )
            .await?;
        let art = &data["createArtifact"]["artifact"];
        let id = art["id"].as_str().unwrap_or("").to_string();
        match art["state"].as_str() {
            Some("COMMITTED") => Ok(None),
            Some("PENDING" | "DELETED") if !id.is_empty() => Ok(Some(Pending {
                id,
                base: art["artifactSequence"]["latestArtifact"]["id"].clone(),
            })),
            other => Err(SyncError::permanent(format!(
                "W&B CreateArtifact for {collection}: unexpected answer (state {other:?})"
            ))),
        }
    }

    /// `CreateArtifactManifest` (first without a digest, then with the
    /// manifest's, asking for its upload URL).
    async fn artifact_manifest(
        &self,
        cur: &Cursor,
        art: &Pending,
        digest: &str,
        include_upload: bool,
    ) -> SyncResult<Value> {
        self.gql(
            "CreateArtifactManifest",
            CREATE_ARTIFACT_MANIFEST,
            json!({
                "artifactID": art.id, "baseArtifactID": art.base, "name": "wandb_manifest.json",
                "digest": digest, "entityName": cur.entity, "projectName": cur.project,
                "runName": cur.run, "manifestType": "FULL", "includeUpload": include_upload,
            }),
        )
        .await
    }

    /// `CreateArtifactFiles` and the uploads it asks for (none for a file
    /// storage has already); returns the manifest's `contents`.
    async fn upload_artifact_files(
        &self,
        art: &Pending,
        manifest_id: &Value,
        collection: &str,
        entries: &[Entry],
    ) -> SyncResult<Map<String, Value>> {
        // Large files go in parts, each declared with its MD5.
        let parts: Vec<_> = entries
            .iter()
            .map(|e| self.multipart.parts(e.bytes.len() as u64))
            .collect();
        let specs: Vec<Value> = entries
            .iter()
            .zip(&parts)
            .map(|(e, p)| {
                let mut spec = json!({"artifactID": art.id, "name": e.name, "md5": e.digest,
                       "artifactManifestID": manifest_id});
                if let Some(p) = p {
                    spec["uploadPartsInput"] = json!(multipart::parts_input(&e.bytes, p));
                }
                spec
            })
            .collect();
        let files = self
            .gql(
                "CreateArtifactFiles",
                CREATE_ARTIFACT_FILES,
                json!({"input": {"artifactFiles": specs, "storageLayout": "V2"}}),
            )
            .await?;
        let edges = files["createArtifactFiles"]["files"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if edges.len() != entries.len() {
            return Err(SyncError::permanent(format!(
                "W&B CreateArtifactFiles for {collection}: {} answers for {} files",
                edges.len(),
                entries.len()
            )));
        }
        let mut contents = Map::new();
        let mut puts = Vec::new();
        for ((e, edge), p) in entries.iter().zip(&edges).zip(&parts) {
            let node = &edge["node"];
            contents.insert(
                e.name.clone(),
                json!({"digest": e.digest, "size": e.bytes.len(),
                       "birthArtifactID": node["artifact"]["id"].as_str().unwrap_or(&art.id)}),
            );
            // No URL: storage has these bytes already (as W&B's client
            // reads the answer, also when part URLs came with it).
            if node["uploadUrl"].is_null() {
                continue;
            }
            if let Some(p) = p {
                puts.push(
                    Box::pin(self.upload_parts(collection, &e.name, node, &e.bytes, p))
                        as std::pin::Pin<
                            Box<dyn std::future::Future<Output = SyncResult<()>> + Send + '_>,
                        >,
                );
                continue;
            }
            if let Some(url) = node["uploadUrl"].as_str() {
                let headers = headers_of(&node["uploadHeaders"]);
                let url = url.to_string();
                puts.push(Box::pin(async move {
                    self.storage
                        .send_with(Method::PUT, &url, &headers, Body::Bytes(&e.bytes, None))
                        .await
                        .map(|_| ())
                }));
            }
        }
        futures_util::future::try_join_all(puts).await?;
        Ok(contents)
    }
}

/// An artifact version `CreateArtifact` left pending: its id and the
/// collection's latest committed version (the manifest's base).
struct Pending {
    id: String,
    base: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// W&B's `sanitize_artifact_name` gives `run-bmas6pwi-Result-TablePipeline-Call-1-Lfe87g`
    /// for this key (seen in a `wandb sync` of an autolog run).
    #[test]
    fn artifact_names_are_sanitised_as_wandb_does() {
        assert_eq!(
            table_artifact_name("bmas6pwi", "Result-Table/Pipeline-Call-1"),
            "run-bmas6pwi-Result-TablePipeline-Call-1-Lfe87g"
        );
        assert_eq!(table_artifact_name("r", "plain_key"), "run-r-plain_key");
    }

    #[test]
    fn client_ids_are_stable_and_shaped_like_wandbs() {
        let (a, b) = client_ids("run", "Result-Table/Pipeline-Call-1");
        assert_eq!(a.len(), 128);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(a, b);
        assert_eq!((a, b), client_ids("run", "Result-Table/Pipeline-Call-1"));
        assert_ne!(
            client_ids("run", "Result-Table/Pipeline-Call-2").0,
            client_ids("run", "Result-Table/Pipeline-Call-1").0
        );
    }
}
