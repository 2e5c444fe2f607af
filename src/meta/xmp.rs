//! XMP, the metadata packet Adobe's, Google's, Midjourney's and most photo
//! tools write into PNG (an iTXt chunk), JPEG (an APP1 segment) and WebP
//! (an `XMP ` chunk): where an image says it was made by a generative
//! model, as IPTC asks (`Iptc4xmpExt:DigitalSourceType`, e.g.
//! `…/trainedAlgorithmicMedia`) and as readers that do not speak C2PA look
//! for it, with the tool that made it (`xmp:CreatorTool`) and its
//! description and title. This reads those properties, whatever prefixes
//! the packet binds to their namespaces, written as attributes or as
//! elements (simple, `rdf:resource`, or language alternatives and lists).
//!
//! Bounded: a packet over [`MAX_XMP`] is not read, nesting is capped at
//! [`MAX_DEPTH`], each value at [`MAX_VALUE`]; the parser expands no
//! entities but XML's five and character references, so a packet cannot
//! grow as it is read.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use serde::Serialize;

/// The PNG keyword of the XMP packet (and the name the other formats'
/// packets are given among a file's texts).
pub const KEYWORD: &str = "XML:com.adobe.xmp";
/// The largest packet read.
pub const MAX_XMP: usize = 1 << 20;
/// The deepest nesting read.
pub const MAX_DEPTH: usize = 64;
/// The longest value kept (longer ones are cut, on a character boundary).
pub const MAX_VALUE: usize = 64 << 10;

const IPTC_EXT: &[u8] = b"http://iptc.org/std/Iptc4xmpExt/2008-02-29/";
const XMP_BASIC: &[u8] = b"http://ns.adobe.com/xap/1.0/";
const DC: &[u8] = b"http://purl.org/dc/elements/1.1/";
const RDF: &[u8] = b"http://www.w3.org/1999/02/22-rdf-syntax-ns#";
const XML: &[u8] = b"http://www.w3.org/XML/1998/namespace";

/// IPTC's code for media made by a trained model (the value's last path
/// segment; IPTC's newscodes also name `compositeWithTrainedAlgorithmicMedia`
/// and `algorithmicMedia`).
pub const TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";

/// What an XMP packet says of how an image was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Xmp {
    /// IPTC's digital source type, as written (an IRI of IPTC's
    /// newscodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digital_source_type: Option<String>,
    /// The tool that made the file (`xmp:CreatorTool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator_tool: Option<String>,
    /// Its description (`dc:description`, the default language's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its title (`dc:title`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its creators (`dc:creator`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub creator: Vec<String>,
}

impl Xmp {
    /// Whether it says nothing this module reads.
    pub fn is_empty(&self) -> bool {
        *self == Xmp::default()
    }

    /// IPTC's words for the digital source type, when it is one of the
    /// generative ones.
    pub fn generative(&self) -> Option<&'static str> {
        generative(self.digital_source_type.as_deref()?)
    }
}

/// IPTC's words for a digital source type (an IRI of its newscodes), when
/// it is one of the generative ones.
pub fn generative(source_type: &str) -> Option<&'static str> {
    match source_type.rsplit('/').next()? {
        "trainedAlgorithmicMedia" => Some("created using a trained model (generative AI)"),
        "compositeWithTrainedAlgorithmicMedia" => {
            Some("edited with, or composited from, a trained model's output (generative AI)")
        }
        "algorithmicMedia" => Some("created by an algorithm, without training data"),
        _ => None,
    }
}

/// The properties read: (namespace, local name).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Prop {
    SourceType,
    CreatorTool,
    Description,
    Title,
    Creator,
}

fn prop(ns: &ResolveResult<'_>, local: &[u8]) -> Option<Prop> {
    let ResolveResult::Bound(ns) = ns else {
        return None;
    };
    match (ns.as_ref(), local) {
        (IPTC_EXT, b"DigitalSourceType") => Some(Prop::SourceType),
        (XMP_BASIC, b"CreatorTool") => Some(Prop::CreatorTool),
        (DC, b"description") => Some(Prop::Description),
        (DC, b"title") => Some(Prop::Title),
        (DC, b"creator") => Some(Prop::Creator),
        _ => None,
    }
}

fn is_rdf(ns: &ResolveResult<'_>, local: &[u8], name: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.as_ref() == RDF) && local == name
}

/// A property being read: its items (`rdf:li`, with their language) and
/// its text outside any item.
struct Open {
    prop: Prop,
    depth: usize,
    items: Vec<(Option<String>, String)>,
    text: String,
    /// The language of the item being read, and whether one is.
    item: Option<Option<String>>,
}

fn push_capped(into: &mut String, s: &str) {
    let room = MAX_VALUE.saturating_sub(into.len());
    let mut end = s.len().min(room);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    into.push_str(&s[..end]);
}

/// Reads an XMP packet (the text between and including `<x:xmpmeta>`, or
/// the whole `<?xpacket?>` wrapper). `Err` says why it cannot be read.
pub fn read(packet: &str) -> Result<Xmp, String> {
    if packet.len() > MAX_XMP {
        return Err(format!(
            "its XMP packet is {} bytes, more than {} MiB: not read",
            packet.len(),
            MAX_XMP >> 20
        ));
    }
    let mut reader = NsReader::from_str(packet);
    let mut out = Xmp::default();
    let mut depth = 0usize;
    let mut open: Option<Open> = None;
    loop {
        let (ns, ev) = reader
            .read_resolved_event()
            .map_err(|e| format!("its XMP packet is not well-formed XML: {e}"))?;
        // What the element is, decided before the attributes are resolved
        // (both borrow the reader).
        let (elem_prop, elem_li) = match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let l = e.local_name();
                (prop(&ns, l.as_ref()), is_rdf(&ns, l.as_ref(), b"li"))
            }
            Event::End(e) => (None, is_rdf(&ns, e.local_name().as_ref(), b"li")),
            _ => (None, false),
        };
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                if !empty {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(format!(
                            "its XMP packet nests deeper than {MAX_DEPTH}: not read"
                        ));
                    }
                }
                let mut lang = None;
                let mut resource = None;
                for a in e.attributes().flatten() {
                    let (ans, alocal) = reader.resolve_attribute(a.key);
                    let value = || a.unescape_value().map(|v| v.into_owned()).ok();
                    if let Some(p) = prop(&ans, alocal.as_ref()) {
                        // A property written as an attribute.
                        if let Some(v) = value() {
                            set(&mut out, p, vec![(None, v)]);
                        }
                    } else if matches!(&ans, ResolveResult::Bound(n) if n.as_ref() == XML)
                        && alocal.as_ref() == b"lang"
                    {
                        lang = value();
                    } else if is_rdf(&ans, alocal.as_ref(), b"resource") {
                        resource = value();
                    }
                }
                match (&mut open, elem_prop) {
                    (None, Some(p)) => {
                        let mut o = Open {
                            prop: p,
                            depth,
                            items: Vec::new(),
                            text: String::new(),
                            item: None,
                        };
                        if let Some(r) = resource {
                            o.text = r;
                        }
                        if empty {
                            set(&mut out, p, close(o));
                        } else {
                            open = Some(o);
                        }
                    }
                    (Some(o), _) if elem_li => {
                        if empty {
                            o.items.push((lang, resource.unwrap_or_default()));
                        } else {
                            o.item = Some(lang);
                            o.items.push((None, String::new()));
                        }
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                if let Some(o) = &mut open {
                    if depth == o.depth {
                        if let Some(o) = open.take() {
                            let p = o.prop;
                            set(&mut out, p, close(o));
                        }
                    } else if elem_li {
                        if let (Some(lang), Some(last)) = (o.item.take(), o.items.last_mut()) {
                            last.0 = lang;
                        }
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(ref t) => {
                if let Some(o) = &mut open {
                    let s = t
                        .xml_content()
                        .map_err(|e| format!("its XMP packet has text it cannot decode: {e}"))?;
                    text_into(o, &s);
                }
            }
            Event::CData(ref t) => {
                if let Some(o) = &mut open {
                    text_into(o, &String::from_utf8_lossy(t));
                }
            }
            Event::GeneralRef(ref r) => {
                if let Some(o) = &mut open {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        _ => match &**r {
                            b"amp" => '&',
                            b"lt" => '<',
                            b"gt" => '>',
                            b"quot" => '"',
                            b"apos" => '\'',
                            other => {
                                return Err(format!(
                                    "its XMP packet refers to an unknown entity &{};",
                                    String::from_utf8_lossy(other)
                                ))
                            }
                        },
                    };
                    text_into(o, c.encode_utf8(&mut [0; 4]));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn text_into(o: &mut Open, s: &str) {
    match (&o.item, o.items.last_mut()) {
        (Some(_), Some(last)) => push_capped(&mut last.1, s),
        _ => push_capped(&mut o.text, s),
    }
}

/// A property's values once read: its items, else its text.
fn close(o: Open) -> Vec<(Option<String>, String)> {
    let text = o.text.trim();
    if o.items.is_empty() && !text.is_empty() {
        return vec![(None, text.to_string())];
    }
    o.items
        .into_iter()
        .map(|(lang, v)| (lang, v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Sets a property the packet did not set before: a language alternative
/// gives its default (`x-default`, else the first); a list, all.
fn set(out: &mut Xmp, p: Prop, values: Vec<(Option<String>, String)>) {
    let chosen = || {
        values
            .iter()
            .find(|(l, _)| l.as_deref() == Some("x-default"))
            .or(values.first())
            .map(|(_, v)| v.clone())
    };
    let field = match p {
        Prop::SourceType => &mut out.digital_source_type,
        Prop::CreatorTool => &mut out.creator_tool,
        Prop::Description => &mut out.description,
        Prop::Title => &mut out.title,
        Prop::Creator => {
            if out.creator.is_empty() {
                out.creator = values.into_iter().map(|(_, v)| v).collect();
            }
            return;
        }
    };
    if field.is_none() {
        *field = chosen();
    }
}

/// The XMP packet among a file's texts, read; `None` without one.
pub fn of_texts(texts: &[(String, String)]) -> Option<Result<Xmp, String>> {
    texts
        .iter()
        .find(|(k, _)| k == KEYWORD)
        .map(|(_, packet)| read(packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_read_as_elements_attributes_and_alternatives_whatever_the_prefix() {
        let packet = r#"<?xpacket begin="﻿" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
 <rdf:Description rdf:about="" xmlns:ext="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
   xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="Tool &amp; Co 1.0"
   xmlns:dc="http://purl.org/dc/elements/1.1/">
  <ext:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia</ext:DigitalSourceType>
  <dc:description><rdf:Alt><rdf:li xml:lang="de">eine Katze</rdf:li><rdf:li xml:lang="x-default">a cat &#x2764; <![CDATA[<b>]]></rdf:li></rdf:Alt></dc:description>
  <dc:creator><rdf:Seq><rdf:li>Ann</rdf:li><rdf:li>Bo</rdf:li></rdf:Seq></dc:creator>
  <dc:title><rdf:Alt><rdf:li xml:lang="fr">chat</rdf:li></rdf:Alt></dc:title>
 </rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>"#;
        let x = read(packet).unwrap();
        assert_eq!(
            x,
            Xmp {
                digital_source_type: Some(TRAINED_ALGORITHMIC_MEDIA.into()),
                creator_tool: Some("Tool & Co 1.0".into()),
                description: Some("a cat \u{2764} <b>".into()),
                title: Some("chat".into()),
                creator: vec!["Ann".into(), "Bo".into()],
            }
        );
        assert!(x.generative().unwrap().contains("trained model"));
        // As a resource; and another namespace's DigitalSourceType is not IPTC's.
        let x = read(r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:I="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:o="urn:other"><o:DigitalSourceType>no</o:DigitalSourceType><I:DigitalSourceType rdf:resource="http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia"/></rdf:Description></rdf:RDF></x:xmpmeta>"#).unwrap();
        assert_eq!(
            x.digital_source_type.as_deref(),
            Some("http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia")
        );
    }

    #[test]
    fn hostile_packets_are_refused_by_reason() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(read(&deep).unwrap_err().contains("nests deeper"));
        let big = format!("<a>{}</a>", "x".repeat(MAX_XMP));
        assert!(read(&big).unwrap_err().contains("MiB"));
        assert!(read("<a><b></a>").unwrap_err().contains("not well-formed"));
        let bomb = r#"<!DOCTYPE a [<!ENTITY e "x">]><a xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>&e;</dc:title></a>"#;
        assert!(read(bomb).unwrap_err().contains("unknown entity &e;"));
        let long = format!(
            r#"<a xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{}</dc:title></a>"#,
            "é".repeat(MAX_VALUE)
        );
        assert_eq!(read(&long).unwrap().title.unwrap().len(), MAX_VALUE);
    }
}
