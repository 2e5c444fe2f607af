//! A W&B protocol emulator on 127.0.0.1 for the sync tests.
//!
//! W&B's server cannot run here, so this speaks the part of its protocol a
//! run upload uses and checks what the real server checks, recording every
//! breach as a *violation* (tests assert there are none) besides answering
//! with the error the real server would give. Where each rule comes from:
//!
//! - Auth: every API request (`/graphql`, `file_stream`) carries HTTP Basic
//!   `api:<key>` — W&B's client (`wandb/sdk/internal/internal_api.py`) sends
//!   `auth=("api", api_key)`; a wrong or missing key gets 401.
//! - GraphQL: the operation's variable declarations must use the types the
//!   W&B schema gives the arguments they feed (as the mutation texts in W&B's
//!   client declare them: `UpsertBucket`'s `$tags: [String!]`,
//!   `$config: JSONString`; `CreateRunFiles`' `String!`/`[String!]!`), every
//!   `$variable` used must be declared, and each variable's JSON value must
//!   coerce to its declared type (GraphQL spec, "Coercing Variable Values":
//!   a non-null variable must be present, a `JSONString` must be a string).
//!   Run config values are `{"value": …}` objects (W&B's config format).
//! - Files: an upload URL is valid only if `CreateRunFiles` issued it, the
//!   `uploadHeaders` it returned must be sent with the `PUT` (signed storage
//!   URLs reject requests without them), no `Content-Type` may be sent that
//!   `uploadHeaders` did not list (on W&B's cloud the signature of a V2-style
//!   signed URL covers the content type; W&B's Go and Python clients send
//!   only the listed headers), and the API key must not go to storage (it is
//!   a different host in production).
//! - `file_stream` (W&B's `file_stream.py`): per file, content is appended
//!   at `offset`; for `wandb-history.jsonl` the offset must equal the lines
//!   the server holds — a duplicated or skipped line is a violation;
//!   `wandb-summary.json` is replaced; every path in `uploaded` must have
//!   been uploaded; `complete` is accepted once (again only after the run was
//!   reopened with `UpsertBucket(state: "running")`).
#![allow(dead_code)]

use super::http::{read_request, Request};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A run as the emulator stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WRun {
    pub id: String,
    pub name: String,
    pub display_name: Option<String>,
    pub tags: Vec<String>,
    pub config: Map<String, Value>,
    pub state: String,
    pub history: Vec<Value>,
    pub summary: Value,
    /// Files by run path, with their bytes.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Paths the file stream listed as uploaded.
    pub uploaded: std::collections::BTreeSet<String>,
    pub completes: usize,
    pub exitcode: Option<i64>,
    /// File-stream requests that carried the summary.
    pub summaries: usize,
    /// File-stream requests that carried nothing (heartbeats).
    pub heartbeats: usize,
}

/// A fault the emulator injects into the next matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Do the work, then close the connection without answering.
    LoseAnswer,
    /// Answer with this status (and `Retry-After` seconds) without doing it.
    Status(u16, Option<u32>),
}

#[derive(Default)]
struct Server {
    key: String,
    entity: String,
    runs: BTreeMap<(String, String), WRun>,
    tokens: HashMap<String, (String, String, String)>,
    violations: Vec<String>,
    requests: Vec<String>,
    faults: VecDeque<(String, Fault)>,
    next_id: u64,
}

/// A running emulator.
pub struct Emulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    inner: Arc<Mutex<Server>>,
}

impl Emulator {
    /// Starts an emulator that accepts `key` for `entity`.
    pub fn start(key: &str, entity: &str) -> Emulator {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Server {
            key: key.into(),
            entity: entity.into(),
            ..Default::default()
        }));
        let s = Arc::clone(&inner);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        Emulator { url, inner }
    }

    /// Every rule breach seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    /// The run `name` of `project`, if it exists.
    pub fn run(&self, project: &str, name: &str) -> Option<WRun> {
        let s = self.inner.lock().unwrap();
        s.runs
            .get(&(project.to_string(), name.to_string()))
            .cloned()
    }

    /// Every run of `project`.
    pub fn runs(&self, project: &str) -> Vec<WRun> {
        let s = self.inner.lock().unwrap();
        s.runs
            .iter()
            .filter(|((p, _), _)| p == project)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Requests seen, as `"<route> <operation>"` strings.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Injects `fault` into the next request to `route` (`UpsertBucket`,
    /// `CreateRunFiles`, `RunHistoryLineCount`, `file_stream`, `PUT`).
    pub fn inject(&self, route: &str, fault: Fault) {
        self.inner
            .lock()
            .unwrap()
            .faults
            .push_back((route.into(), fault));
    }
}

struct Response {
    status: u16,
    body: Value,
    retry_after: Option<u32>,
}

fn resp(status: u16, body: Value) -> Response {
    Response {
        status,
        body,
        retry_after: None,
    }
}

fn serve(stream: TcpStream, server: &Mutex<Server>) {
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (route, lose) = {
            let mut s = server.lock().unwrap();
            let route = route_of(&req);
            s.requests.push(format!("{} {}", req.method, route));
            let fault = s
                .faults
                .iter()
                .position(|(r, _)| *r == route)
                .and_then(|i| s.faults.remove(i))
                .map(|(_, f)| f);
            match fault {
                Some(Fault::Status(code, ra)) => {
                    drop(s);
                    let mut out = resp(code, json!({"error": "injected fault"}));
                    out.retry_after = ra;
                    if write_response(&mut w, &out).is_err() || close {
                        return;
                    }
                    continue;
                }
                Some(Fault::LoseAnswer) => (route, true),
                None => (route, false),
            }
        };
        let out = {
            let mut s = server.lock().unwrap();
            handle(&mut s, &req, &route)
        };
        if lose {
            let _ = w.shutdown(std::net::Shutdown::Both);
            return;
        }
        if write_response(&mut w, &out).is_err() || close {
            return;
        }
    }
}

fn write_response(w: &mut TcpStream, r: &Response) -> std::io::Result<()> {
    let body = r.body.to_string();
    let ra = r
        .retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    // One write: pieces written one by one would each wait for the
    // client's delayed ACK (Nagle), ~40 ms per answer.
    let out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{ra}\r\n{body}",
        r.status,
        body.len()
    );
    w.write_all(out.as_bytes())
}

/// The route a request belongs to, for faults and the request log.
fn route_of(req: &Request) -> String {
    if req.path == "/graphql" {
        let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let q = v["query"].as_str().unwrap_or("");
        return operation_name(q).unwrap_or_else(|| "graphql?".into());
    }
    if req.path.ends_with("/file_stream") {
        return "file_stream".into();
    }
    if req.path.starts_with("/storage/") {
        return "PUT".into();
    }
    req.path.clone()
}

fn operation_name(q: &str) -> Option<String> {
    let q = q.trim_start();
    let rest = q
        .strip_prefix("mutation")
        .or_else(|| q.strip_prefix("query"))?;
    let name: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

fn handle(s: &mut Server, req: &Request, route: &str) -> Response {
    if req.method == "PUT" && req.path.starts_with("/storage/") {
        return put_file(s, req);
    }
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("api:{}", s.key))
    );
    if req.header("authorization") != Some(want.as_str()) {
        return resp(
            401,
            json!({"errors": [{"message": "user is not logged in"}]}),
        );
    }
    if req.method == "POST" && req.path == "/graphql" {
        return graphql(s, req, route);
    }
    if req.method == "POST" && req.path.ends_with("/file_stream") {
        return file_stream(s, req);
    }
    s.violations.push(format!(
        "request to an unknown route: {} {}",
        req.method, req.path
    ));
    resp(404, json!({"error": "not found"}))
}

fn violation(s: &mut Server, status: u16, msg: String) -> Response {
    s.violations.push(msg.clone());
    resp(status, json!({"errors": [{"message": msg}]}))
}

/// The argument types of the fields an upload uses, as W&B's schema has them.
fn arg_type(field: &str, arg: &str) -> Option<&'static str> {
    Some(match (field, arg) {
        ("upsertBucket", "id" | "name" | "modelName" | "entityName" | "displayName") => "String",
        ("upsertBucket", "notes" | "state" | "description" | "groupName" | "jobType") => "String",
        ("upsertBucket", "commit" | "host" | "program" | "repo" | "sweep") => "String",
        ("upsertBucket", "config" | "summaryMetrics") => "JSONString",
        ("upsertBucket", "tags") => "[String!]",
        ("upsertBucket", "debug") => "Boolean",
        ("createRunFiles", "entityName" | "projectName" | "runName") => "String!",
        ("createRunFiles", "files") => "[String!]!",
        ("model", "name" | "entityName") => "String",
        ("bucket", "name") => "String!",
        ("bucket", "missingOk") => "Boolean",
        _ => return None,
    })
}

/// Whether a variable of type `var` may feed an argument of type `arg`.
fn compatible(var: &str, arg: &str) -> bool {
    var == arg || var.strip_suffix('!') == Some(arg)
}

/// Whether `v` coerces to GraphQL type `ty`.
fn coerces(v: Option<&Value>, ty: &str) -> bool {
    if let Some(inner) = ty.strip_suffix('!') {
        return matches!(v, Some(x) if !x.is_null()) && coerces(v, inner);
    }
    let Some(v) = v.filter(|x| !x.is_null()) else {
        return true;
    };
    if let Some(elem) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return v
            .as_array()
            .is_some_and(|a| a.iter().all(|x| coerces(Some(x), elem)));
    }
    match ty {
        "String" => v.is_string(),
        "JSONString" => v
            .as_str()
            .is_some_and(|t| serde_json::from_str::<Value>(t).is_ok()),
        "Boolean" => v.is_boolean(),
        "Int" => v.is_i64(),
        _ => false,
    }
}

/// Validates the operation and returns the value each argument of `field`
/// receives (resolved from the variables).
fn arguments(
    query: &str,
    vars: &Map<String, Value>,
    field: &str,
) -> Result<Map<String, Value>, String> {
    let open = query.find('(').ok_or("no variable declarations")?;
    let close = open + query[open..].find(')').ok_or("unclosed declarations")?;
    let mut declared: HashMap<String, String> = HashMap::new();
    for def in query[open + 1..close].split(',') {
        let def = def.trim();
        if def.is_empty() {
            continue;
        }
        let (name, ty) = def
            .split_once(':')
            .ok_or(format!("bad declaration {def:?}"))?;
        let name = name
            .trim()
            .strip_prefix('$')
            .ok_or(format!("bad variable {name:?}"))?;
        declared.insert(name.to_string(), ty.trim().replace(' ', ""));
    }
    for (name, ty) in &declared {
        if !coerces(vars.get(name), ty) {
            return Err(format!(
                "Variable \"${name}\" got invalid value {}; expected type {ty}",
                vars.get(name).cloned().unwrap_or(Value::Null)
            ));
        }
    }
    let body = &query[close..];
    let start = body
        .find(&format!("{field}("))
        .ok_or(format!("the operation does not call {field}"))?;
    let after = &body[start + field.len() + 1..];
    let args_text = &after[..after.find(')').unwrap_or(after.len())];
    let args_text = args_text
        .trim()
        .trim_start_matches("input:")
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}');
    let mut out = Map::new();
    for pair in args_text.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (arg, val) = pair
            .split_once(':')
            .ok_or(format!("bad argument {pair:?}"))?;
        let (arg, val) = (arg.trim(), val.trim());
        let want = arg_type(field, arg)
            .ok_or(format!("Unknown argument \"{arg}\" on field \"{field}\""))?;
        let Some(var) = val.strip_prefix('$') else {
            // A literal.
            let lit: Value = serde_json::from_str(val).map_err(|_| format!("bad literal {val}"))?;
            if !coerces(Some(&lit), want) {
                return Err(format!("literal {val} is not a {want}"));
            }
            out.insert(arg.to_string(), lit);
            continue;
        };
        let ty = declared
            .get(var)
            .ok_or(format!("Variable \"${var}\" is not defined"))?;
        if !compatible(ty, want) {
            return Err(format!(
                "Variable \"${var}\" of type \"{ty}\" used in position expecting type \"{want}\""
            ));
        }
        out.insert(
            arg.to_string(),
            vars.get(var).cloned().unwrap_or(Value::Null),
        );
    }
    Ok(out)
}

fn str_arg(a: &Map<String, Value>, k: &str) -> Option<String> {
    a.get(k).and_then(Value::as_str).map(str::to_string)
}

fn graphql(s: &mut Server, req: &Request, route: &str) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
        return violation(s, 400, "GraphQL body is not JSON".into());
    };
    let query = v["query"].as_str().unwrap_or("").to_string();
    let vars = v["variables"].as_object().cloned().unwrap_or_default();
    let gql_err = |s: &mut Server, m: String| violation(s, 400, format!("{route}: {m}"));
    match route {
        "UpsertBucket" => {
            let a = match arguments(&query, &vars, "upsertBucket") {
                Ok(a) => a,
                Err(e) => return gql_err(s, e),
            };
            let entity = str_arg(&a, "entityName").unwrap_or_else(|| s.entity.clone());
            if entity != s.entity {
                return resp(
                    200,
                    json!({"errors": [{"message": format!("permission denied for entity {entity}")}], "data": null}),
                );
            }
            let Some(project) = str_arg(&a, "modelName") else {
                return gql_err(s, "no project (modelName)".into());
            };
            let Some(name) = str_arg(&a, "name") else {
                return gql_err(s, "no run name".into());
            };
            let mut config = None;
            if let Some(c) = str_arg(&a, "config") {
                let parsed: Map<String, Value> = match serde_json::from_str(&c) {
                    Ok(m) => m,
                    Err(_) => return gql_err(s, "config is not a JSON object".into()),
                };
                for (k, v) in &parsed {
                    if v.get("value").is_none() {
                        return gql_err(
                            s,
                            format!("config key {k} is not a {{\"value\": …}} object"),
                        );
                    }
                }
                config = Some(parsed);
            }
            s.next_id += 1;
            let id = format!("UnVuOnYx{}", s.next_id);
            let key = (project.clone(), name.clone());
            let inserted = !s.runs.contains_key(&key);
            let run = s.runs.entry(key).or_insert_with(|| WRun {
                id,
                name: name.clone(),
                state: "running".into(),
                summary: json!({}),
                ..Default::default()
            });
            if let Some(d) = str_arg(&a, "displayName") {
                run.display_name = Some(d);
            }
            if let Some(t) = a.get("tags").and_then(Value::as_array) {
                run.tags = t
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
            }
            if let Some(c) = config {
                run.config = c;
            }
            if str_arg(&a, "state").as_deref() == Some("running") {
                run.state = "running".into();
            }
            resp(
                200,
                json!({"data": {"upsertBucket": {"inserted": inserted, "bucket": {
                    "id": run.id, "name": run.name, "displayName": run.display_name,
                    "state": run.state, "historyLineCount": run.history.len(),
                    "project": {"name": project, "entity": {"name": entity}},
                }}}}),
            )
        }
        "CreateRunFiles" => {
            let a = match arguments(&query, &vars, "createRunFiles") {
                Ok(a) => a,
                Err(e) => return gql_err(s, e),
            };
            let (e, p, r) = (
                str_arg(&a, "entityName").unwrap_or_default(),
                str_arg(&a, "projectName").unwrap_or_default(),
                str_arg(&a, "runName").unwrap_or_default(),
            );
            if e != s.entity {
                return resp(
                    200,
                    json!({"errors": [{"message": format!("permission denied for entity {e}")}], "data": null}),
                );
            }
            let Some(run_id) = s.runs.get(&(p.clone(), r.clone())).map(|x| x.id.clone()) else {
                return gql_err(s, format!("run {e}/{p}/{r} does not exist"));
            };
            let host = req.header("host").unwrap_or("127.0.0.1").to_string();
            let mut files = Vec::new();
            for f in a
                .get("files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = f.as_str().unwrap_or("").to_string();
                s.next_id += 1;
                let token = format!("t{}x{}", s.next_id, rand_u32());
                s.tokens
                    .insert(token.clone(), (p.clone(), r.clone(), name.clone()));
                files.push(
                    json!({"name": name, "uploadUrl": format!("http://{host}/storage/{token}")}),
                );
            }
            // One token per request is enough to check the headers are sent.
            let check = files
                .first()
                .and_then(|f| f["uploadUrl"].as_str())
                .and_then(|u| u.rsplit('/').next())
                .unwrap_or("")
                .to_string();
            resp(
                200,
                json!({"data": {"createRunFiles": {"runID": run_id, "uploadHeaders": [format!("X-Upload-Check:{check}")], "files": files}}}),
            )
        }
        "RunHistoryLineCount" => {
            if let Err(e) = arguments(&query, &vars, "model") {
                return gql_err(s, e);
            }
            let a = match arguments(&query, &vars, "bucket") {
                Ok(a) => a,
                Err(e) => return gql_err(s, e),
            };
            let p = vars.get("project").and_then(Value::as_str).unwrap_or("");
            let name = str_arg(&a, "name").unwrap_or_default();
            let bucket = s
                .runs
                .get(&(p.to_string(), name))
                .map(|r| json!({"historyLineCount": r.history.len(), "state": r.state}));
            resp(200, json!({"data": {"model": {"bucket": bucket}}}))
        }
        other => gql_err(s, format!("unknown operation {other}")),
    }
}

fn put_file(s: &mut Server, req: &Request) -> Response {
    let token = req.path.trim_start_matches("/storage/").to_string();
    let Some((p, r, name)) = s.tokens.get(&token).cloned() else {
        return violation(
            s,
            403,
            format!(
                "PUT to an upload URL CreateRunFiles never issued: {}",
                req.path
            ),
        );
    };
    if req.header("authorization").is_some() {
        return violation(
            s,
            400,
            format!("the API key was sent to storage with {name}"),
        );
    }
    if let Some(ct) = req.header("content-type") {
        return violation(
            s,
            403,
            format!("PUT of {name} with Content-Type {ct:?}, which uploadHeaders did not list"),
        );
    }
    let check = req.header("x-upload-check").unwrap_or("");
    if !s.tokens.contains_key(check) {
        return violation(s, 403, format!("PUT of {name} without the uploadHeaders"));
    }
    match s.runs.get_mut(&(p, r)) {
        Some(run) => {
            run.files.insert(name, req.body.clone());
            resp(200, Value::Null)
        }
        None => violation(
            s,
            404,
            format!("upload for a run that does not exist: {name}"),
        ),
    }
}

/// A file-stream request that carries nothing: W&B's client's heartbeat
/// (`{}` from the Go client, `{"complete": false, "failed": false}` from the
/// old Python one).
fn is_heartbeat(body: &Value) -> bool {
    body["complete"] != true
        && body["files"].as_object().is_none_or(|f| f.is_empty())
        && body["uploaded"].as_array().is_none_or(|u| u.is_empty())
}

fn file_stream(s: &mut Server, req: &Request) -> Response {
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let [_, e, p, r, _] = parts.as_slice() else {
        return violation(s, 404, format!("bad file_stream path {}", req.path));
    };
    if *e != s.entity {
        return resp(403, json!({"error": "permission denied"}));
    }
    let key = (p.to_string(), r.to_string());
    if !s.runs.contains_key(&key) {
        return violation(s, 404, format!("file_stream for unknown run {}", req.path));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return violation(s, 400, "file_stream body is not JSON".into());
    };
    let mut errors = Vec::new();
    {
        let run = s.runs.get(&key).unwrap();
        if let Some(h) = body["files"].get("wandb-history.jsonl") {
            let offset = h["offset"].as_u64().unwrap_or(u64::MAX);
            if offset != run.history.len() as u64 {
                errors.push(format!(
                    "history offset {offset} but the server holds {} lines: a line was {}",
                    run.history.len(),
                    if offset < run.history.len() as u64 {
                        "duplicated"
                    } else {
                        "skipped"
                    }
                ));
            }
            for c in h["content"].as_array().into_iter().flatten() {
                let ok = c
                    .as_str()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .is_some_and(|v| v.is_object());
                if !ok {
                    errors.push(format!("history line is not a JSON object string: {c}"));
                }
            }
        }
        if let Some(sm) = body["files"].get("wandb-summary.json") {
            if sm["offset"] != 0 || sm["content"].as_array().map(Vec::len) != Some(1) {
                errors.push(format!("summary must be one line at offset 0: {sm}"));
            }
        }
        for u in body["uploaded"].as_array().into_iter().flatten() {
            let path = u.as_str().unwrap_or("");
            if !run.files.contains_key(path) {
                errors.push(format!("listed as uploaded but never uploaded: {path}"));
            }
        }
        if is_heartbeat(&body) && run.state != "running" {
            errors.push(format!("heartbeat for a {} run", run.state));
        }
        if body["complete"] == true && run.state != "running" {
            errors.push(format!("run marked complete again (state {})", run.state));
        }
    }
    if !errors.is_empty() {
        return violation(s, 400, errors.join("; "));
    }
    let run = s.runs.get_mut(&key).unwrap();
    if let Some(h) = body["files"].get("wandb-history.jsonl") {
        for c in h["content"].as_array().into_iter().flatten() {
            run.history
                .push(serde_json::from_str(c.as_str().unwrap_or("{}")).unwrap_or(Value::Null));
        }
    }
    if let Some(sm) = body["files"].get("wandb-summary.json") {
        run.summary =
            serde_json::from_str(sm["content"][0].as_str().unwrap_or("{}")).unwrap_or(Value::Null);
        run.summaries += 1;
    }
    for u in body["uploaded"].as_array().into_iter().flatten() {
        run.uploaded.insert(u.as_str().unwrap_or("").to_string());
    }
    if is_heartbeat(&body) {
        run.heartbeats += 1;
    }
    if body["complete"] == true {
        run.completes += 1;
        let code = body["exitcode"].as_i64().unwrap_or(0);
        run.exitcode = Some(code);
        run.state = if code == 0 { "finished" } else { "failed" }.into();
    }
    resp(200, json!({"exitcode": null, "limits": {}}))
}

fn rand_u32() -> u32 {
    rand::random()
}
