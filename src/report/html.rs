//! The page parts `report` and `compare` share: escaping, relative links,
//! the style sheet, recorded data embedded as JSON, and the image viewer
//! (full image, its record, a slider between two images, the difference
//! view), which is plain JavaScript inside the page so that it opens from
//! disk with no network.

use crate::format::percent_encode;
use serde::Serialize;
use std::path::{Component, Path};

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Relative link from directory `from` to `to` (both absolute), with `/`
/// and every part percent-encoded.
pub fn relative(from: &Path, to: &Path) -> String {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts
        .iter()
        .map(|p| {
            p.split('/')
                .map(percent_encode)
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A link to `rel` (a `/`-separated path below the page's folder).
pub fn href(rel: &str) -> String {
    rel.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}\
th{background:#f3f3f3}video.thumb{width:128px;height:auto;background:#eee;cursor:zoom-in}img.thumb{width:128px;height:auto;image-rendering:pixelated;background:#eee;cursor:zoom-in}\
pre{background:#f7f7f7;padding:.5em;overflow:auto;max-height:24em}.error{color:#b00020}.meta td:first-child{font-weight:600}\
section{margin-top:1.5em}td.missing{background:repeating-linear-gradient(45deg,#f4f4f4,#f4f4f4 6px,#e6e6e6 6px,#e6e6e6 12px);color:#888;text-align:center;vertical-align:middle;min-width:128px}\
.badge{font-size:.8em;color:#555}.video{font-size:.8em;color:#1a4f8b}.badge.same{color:#0a7d28}th.rowhead{max-width:22em;font-weight:normal}th.rowhead small{color:#666;display:block}\
#viewer{position:fixed;inset:0;background:#1b1b1b;color:#eee;overflow:auto;padding:1em 2em;z-index:10}\
#viewer table td,#viewer table th{border-color:#555;background:transparent;color:#eee}#viewer td{word-break:break-word;max-width:60em}#viewer img{image-rendering:pixelated;background:#333}\
#v-full,#v-video{max-width:min(90vw,1024px);min-width:256px}.stack{position:relative;display:inline-block}\
.stack img{display:block;width:min(80vw,512px);min-width:256px}.stack img#v-a{position:absolute;left:0;top:0}\
#v-diffbox{width:min(80vw,512px);min-width:256px;overflow:hidden;background:#000}#v-diff{width:100%;display:block}#viewer button{margin:.3em}#filter{font-size:1em;padding:.3em;width:24em}\
.tiles{display:flex;flex-wrap:wrap;gap:8px;margin:.5em 0}.tiles figure{margin:0;width:160px}\
.tiles video{width:160px;height:auto;background:#eee;cursor:zoom-in}.tiles img{width:160px;height:auto;image-rendering:pixelated;background:#eee;cursor:zoom-in}\
.tiles figcaption{font-size:.8em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}";

/// A whole page: `body` inside the shared head and style.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        escape(title)
    )
}

/// What the viewer knows of one image: its full-size link, its record
/// (label, value pairs shown as text), and where a difference against
/// another image was computed.
#[derive(Debug, Clone, Serialize)]
pub struct ViewerItem {
    /// Link to the full-size image.
    pub full: String,
    /// Short name shown above the image (run, call, row).
    pub label: String,
    /// The record: (field, value) pairs, shown as text.
    pub record: Vec<(String, String)>,
    /// The item this one was compared against (the grid row's baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<usize>,
    /// The difference against `baseline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<DiffView>,
}

/// A difference as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DiffView {
    /// Link to the strip of heat maps holding this one (none when the two
    /// were not compared pixel by pixel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heat: Option<String>,
    /// Which heat map of the strip (stacked top to bottom).
    pub index: usize,
    /// How many heat maps the strip holds.
    pub count: usize,
    /// Width / height of one heat map, as CSS `aspect-ratio`.
    pub aspect: String,
    /// One line of figures (mean/max difference, byte- or pixel-identical).
    pub text: String,
}

impl DiffView {
    /// A difference told in words only (no heat map).
    pub fn text(text: String) -> DiffView {
        DiffView {
            heat: None,
            index: 0,
            count: 1,
            aspect: "1 / 1".into(),
            text,
        }
    }
}

/// The viewer's markup, its data (escaped so that no recorded string can
/// close the script element) and its script.
pub fn viewer(items: &[ViewerItem]) -> String {
    let json = serde_json::to_string(items).unwrap_or_else(|_| "[]".into());
    // `<`, `>` and `&` as JSON escapes: the text is still the same JSON, and
    // a prompt holding `</script>` cannot end the element.
    let json = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    format!(
        "<div id=\"viewer\" hidden><p><button id=\"v-close\">close (Esc)</button>\
         <button id=\"v-pick\">pick as A for a comparison</button> <span id=\"v-picked\"></span></p>\
         <h2 id=\"v-title\"></h2><img id=\"v-full\" alt=\"full image\"><video id=\"v-video\" controls loop muted autoplay playsinline hidden></video>\
         <table id=\"v-record\"></table>\
         <section id=\"v-compare\" hidden><h3>A: <span id=\"v-a-label\"></span> — B: <span id=\"v-b-label\"></span></h3>\
         <p>slide: A on the left of the line, B on the right <input id=\"v-slider\" type=\"range\" min=\"0\" max=\"100\" value=\"50\"></p>\
         <div class=\"stack\"><img id=\"v-b\" alt=\"B\"><img id=\"v-a\" alt=\"A\"></div>\
         <h3>Difference |A − B| <span id=\"v-figures\"></span></h3><div id=\"v-diffbox\"><img id=\"v-diff\" alt=\"difference heat map\"></div></section></div>\n\
         <script type=\"application/json\" id=\"difflog-items\">{json}</script>\n<script>{VIEWER_JS}</script>\n"
    )
}

const VIEWER_JS: &str = r#"(function(){
const items = JSON.parse(document.getElementById('difflog-items').textContent);
const $ = id => document.getElementById(id);
let current = null, picked = null;
function record(it){
  const t = $('v-record'); t.textContent = '';
  for (const [k, v] of it.record) {
    const tr = t.insertRow(); const a = document.createElement('th'); a.textContent = k; tr.appendChild(a);
    tr.insertCell().textContent = v;
  }
}
function diffOf(a, b){
  if (items[b].baseline === a && items[b].diff) return items[b].diff;
  if (items[a].baseline === b && items[a].diff) return items[a].diff;
  return null;
}
function slide(){ $('v-a').style.clipPath = 'inset(0 ' + (100 - $('v-slider').value) + '% 0 0)'; }
function compare(a, b){
  const pane = $('v-compare');
  if (a === null || a === undefined || a === b) { pane.hidden = true; pane.dataset.pair = ''; return; }
  pane.hidden = false; pane.dataset.pair = a + ',' + b;
  $('v-a').src = items[a].full; $('v-b').src = items[b].full;
  $('v-a-label').textContent = items[a].label; $('v-b-label').textContent = items[b].label;
  const d = diffOf(a, b);
  const img = $('v-diff'), box = $('v-diffbox');
  if (d && d.heat) {
    // One heat map of the row's strip: the box has its shape, the strip slides up.
    img.src = d.heat; box.hidden = false; box.style.aspectRatio = d.aspect;
    img.style.transform = 'translateY(-' + (100 * d.index / d.count) + '%)';
  } else { img.removeAttribute('src'); box.hidden = true; }
  $('v-figures').textContent = d ? d.text : '(computed only against each grid row\u2019s baseline)';
  slide();
}
function show(k){
  const it = items[k]; current = k;
  // An MP4 plays in a video element; images (and animated PNGs) show as images.
  const mp4 = /\.mp4$/.test(it.full), v = $('v-video');
  $('v-full').hidden = mp4; v.hidden = !mp4;
  if (mp4) { v.src = it.full; $('v-full').removeAttribute('src'); } else { v.removeAttribute('src'); $('v-full').src = it.full; }
  $('v-title').textContent = it.label; record(it);
  $('viewer').dataset.item = k; $('viewer').hidden = false;
  compare(picked !== null ? picked : it.baseline, k);
}
document.addEventListener('click', e => {
  const c = e.target.closest('[data-item]');
  if (c && !$('viewer').contains(c)) { e.preventDefault(); show(+c.dataset.item); }
});
$('v-close').onclick = () => { $('viewer').hidden = true; $('v-video').pause(); };
$('v-pick').onclick = () => { picked = current; $('v-picked').textContent = 'A = ' + items[current].label + ' (click another image for B)'; $('viewer').hidden = true; };
$('v-slider').oninput = slide;
document.addEventListener('keydown', e => { if (e.key === 'Escape') { $('viewer').hidden = true; $('v-video').pause(); } });
const f = $('filter');
if (f) f.oninput = () => {
  const q = f.value.toLowerCase();
  document.querySelectorAll('[data-prompt]').forEach(r => { r.hidden = q !== '' && !r.dataset.prompt.toLowerCase().includes(q); });
};
})();"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_paths_are_relative() {
        assert_eq!(
            escape("<script>alert('x')</script> & \""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;"
        );
        assert_eq!(
            relative(
                Path::new("/a/report"),
                Path::new("/a/runs/r1/media/ab/x.png")
            ),
            "../runs/r1/media/ab/x.png"
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a/b c/d")), "b%20c/d");
    }

    #[test]
    fn recorded_text_cannot_close_the_data_script() {
        let item = ViewerItem {
            full: "a.png".into(),
            label: "</script><script>alert(1)</script>".into(),
            record: vec![("Prompt".into(), "a & b <i>".into())],
            baseline: None,
            diff: None,
        };
        let html = viewer(&[item]);
        let data = html
            .split("id=\"difflog-items\">")
            .nth(1)
            .and_then(|s| s.split("</script>").next())
            .unwrap();
        assert!(!data.contains('<') && !data.contains('>'));
        let back: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(back[0]["label"], "</script><script>alert(1)</script>");
        assert_eq!(back[0]["record"][0][1], "a & b <i>");
    }
}
