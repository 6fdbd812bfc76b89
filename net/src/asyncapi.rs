//! The AsyncAPI documents of the WebSocket endpoints, embedded in the binary (`net/web/asyncapi-*.json`),
//! and a readable HTML page of each, written from the document itself so the two cannot disagree.
//!
//! `.ci/run` validates the documents with the official AsyncAPI parser (`net/tests/asyncapi`), and
//! `net/tests/dialects.rs` sends every example a client may send to a live server and checks each reply
//! against the document's example of it.

use std::fmt::Write;

use serde_json::Value;

/// `/api/v1/ws` (seed 003, the fastws dialect).
pub const FASTWS: &str = include_str!("../web/asyncapi-fastws.json");

/// `/v1/stream` (the canonical protocol), with exactly the examples of docs/protocol.md.
pub const STREAM: &str = include_str!("../web/asyncapi-stream.json");

/// A page of a document: its info, servers and operations, each operation's messages with their payload
/// schema and examples. No script, no style sheet, no external resource.
pub fn html(document: &str) -> String {
    let doc: Value = serde_json::from_str(document).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().map(escape).unwrap_or_default();
    let pretty = |v: &Value| escape(&serde_json::to_string_pretty(v).unwrap_or_default());
    let mut out = String::with_capacity(16 * 1024);
    let title = text(&doc["info"]["title"]);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{title}</title></head><body>\n<h1>{title}</h1>\n\
         <p>AsyncAPI {} &middot; version {} &middot; <a href=\"asyncapi.json\">the document (JSON)</a></p>\n<p>{}</p>\n",
        text(&doc["asyncapi"]),
        text(&doc["info"]["version"]),
        text(&doc["info"]["description"]),
    );
    if let Some(servers) = doc["servers"].as_object() {
        out.push_str("<h2>Servers</h2>\n<ul>\n");
        for (name, s) in servers {
            let _ = writeln!(
                out,
                "<li><b>{}</b>: <code>{}://{}{}</code> {}</li>",
                escape(name),
                text(&s["protocol"]),
                text(&s["host"]),
                text(&s["pathname"]),
                text(&s["description"])
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>Operations</h2>\n");
    for (name, op) in doc["operations"].as_object().into_iter().flatten() {
        let who = if op["action"] == "receive" { "the client sends" } else { "the server sends" };
        let _ = writeln!(out, "<h3 id=\"{0}\">{0}</h3>\n<p>{who}: {1}</p>", escape(name), text(&op["summary"]));
        let replies = op["reply"]["messages"].as_array().cloned().unwrap_or_default();
        for (label, refs) in [("Message", op["messages"].as_array().cloned().unwrap_or_default()), ("Reply", replies)] {
            for r in refs {
                let Some(message) = resolve(&doc, &r) else { continue };
                let _ = writeln!(out, "<h4>{label}: <code>{}</code></h4>", text(&message["name"]));
                let _ = writeln!(
                    out,
                    "<details><summary>payload schema</summary><pre>{}</pre></details>",
                    pretty(&message["payload"])
                );
                for ex in message["examples"].as_array().into_iter().flatten() {
                    let _ =
                        writeln!(out, "<p>Example: {}</p>\n<pre>{}</pre>", text(&ex["name"]), pretty(&ex["payload"]));
                }
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// The message a `{"$ref": "#/..."}` points at, following one more reference if it is one.
fn resolve<'a>(doc: &'a Value, r: &Value) -> Option<&'a Value> {
    let mut v = doc.pointer(r["$ref"].as_str()?.strip_prefix('#')?)?;
    if let Some(next) = v["$ref"].as_str() {
        v = doc.pointer(next.strip_prefix('#')?)?;
    }
    Some(v)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_every_operation_and_example_of_the_document() {
        for document in [FASTWS, STREAM] {
            shows_everything(document);
        }
    }

    fn shows_everything(document: &str) {
        let page = html(document);
        let doc: Value = serde_json::from_str(document).unwrap();
        for name in doc["operations"].as_object().unwrap().keys() {
            assert!(page.contains(&format!("<h3 id=\"{name}\">")), "{name}");
        }
        for m in doc["components"]["messages"].as_object().unwrap().values() {
            assert!(page.contains(&format!("<code>{}</code>", m["name"].as_str().unwrap())), "{}", m["name"]);
        }
        assert!(page.contains("&quot;type&quot;"), "examples are escaped JSON");
        assert!(!page.contains("<script"), "no script");
    }
}
