//! A client request's header fields, as the proxy reads, trims and forwards
//! them: a list in the order they came, not a `HeaderMap`.
//!
//! Why a list over the head: an HTTP/1.x head is one shared buffer
//! (`guard.rs` `take_head`), and a field kept as a range of it costs nothing
//! more, where a field value made from it (`HeaderValue::from_maybe_shared`) is
//! a locked increment of the buffer's reference count and, when dropped, a
//! locked decrement (about 4.3 ns each on the benchmark VM), and a map insert
//! hashes the name and may grow two tables. The proxy reads a handful of fields
//! by name (`Host`, `User-Agent`, `Cookie`, the hop-by-hop ones) and writes the
//! rest out once, in order (`h1client.rs` `write_head`): a list scan is as
//! cheap as a map lookup at a request's dozen fields. nginx keeps a request's
//! fields the same way, as pointers into its read buffer. HTTP/2 requests
//! arrive as a map (the `h2` crate's); [`ClientFields::from_map`] moves its
//! fields into a list once.

use super::headers::valid_value;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A field's value: a range of the head, or a value of its own (HTTP/2, or
/// one the gateway made, such as joined `Cookie` fields).
#[derive(Debug, Clone)]
enum Value {
    /// The value is `head[start..end]`, which httparse checked by
    /// [`HeaderValue`]'s rule; the whole field line, name to CRLF, is
    /// `head[line..line_end]` (`line_end` 0 when it is not known to be one).
    At {
        line: u32,
        start: u32,
        end: u32,
        line_end: u32,
    },
    /// A value of its own.
    Own(HeaderValue),
}

impl Value {
    /// The value's bytes; `head` is the buffer of the list it is in.
    fn bytes<'a>(&'a self, head: &'a [u8]) -> &'a [u8] {
        match self {
            Value::At { start, end, .. } => {
                head.get(*start as usize..*end as usize).unwrap_or_default()
            }
            Value::Own(v) => v.as_bytes(),
        }
    }
}

/// A request's header fields in the order they came: names as `HeaderName`s
/// (lower case), values as ranges of the head or values of their own. Every
/// value holds only the bytes a `HeaderValue` may hold (visible ASCII,
/// obs-text, SP and HTAB; RFC 9110 §5.5).
#[derive(Debug, Clone, Default)]
pub struct ClientFields {
    /// The buffer [`Value::At`] ranges point into (the HTTP/1.x head; empty
    /// for HTTP/2).
    head: Bytes,
    list: Vec<(HeaderName, Value)>,
}

impl ClientFields {
    /// An empty list over `head`, room for `capacity` fields.
    pub fn over(head: Bytes, capacity: usize) -> ClientFields {
        ClientFields {
            head,
            list: Vec::with_capacity(capacity),
        }
    }

    /// Adds the field whose name as it came is `raw_name` and whose value
    /// is `value`, both slices of the head this list is over, as httparse
    /// gives them; `name` is `raw_name` looked up. Returns false, and adds
    /// nothing, when either slice is not inside the head or the value does
    /// not follow the name.
    ///
    /// `value` must hold only what a field value may (no control byte but
    /// HTAB, RFC 9110 §5.5). httparse refuses a head with any other in a
    /// value: its rule (`%x09 %x20-%x7e %x80-%xff`) is `HeaderValue`'s, which
    /// `guard.rs` test `httparse_field_values_are_header_values` holds it to;
    /// debug builds check it again here. A check of our own in release
    /// builds cost about 570 instructions a browser's request.
    #[must_use]
    pub fn push_slice(&mut self, name: HeaderName, raw_name: &[u8], value: &[u8]) -> bool {
        let head: &[u8] = &self.head;
        let base = head.as_ptr() as usize;
        let line = (raw_name.as_ptr() as usize).wrapping_sub(base);
        let start = (value.as_ptr() as usize).wrapping_sub(base);
        let end = start.wrapping_add(value.len());
        let Some(name_end) = line.checked_add(raw_name.len()) else {
            return false;
        };
        if name_end > start || start > end || end > head.len() {
            return false;
        }
        debug_assert!(valid_value(value), "a field value httparse let through");
        // The line is copied whole only when it is exactly `name ":" OWS
        // value OWS CRLF` and starts a line (what httparse's default rules
        // let through): its name, then a colon and whitespace up to the
        // value, then whitespace and CRLF. Anything else is written as
        // `name: value`.
        let ows = |b: &u8| matches!(b, b' ' | b'\t');
        let rest = head.get(end..).unwrap_or_default();
        let ws = rest.iter().take_while(|b| ows(b)).count();
        let whole_line = line >= 2
            && head.get(line - 2..line) == Some(b"\r\n")
            && head
                .get(name_end..start)
                .is_some_and(|sep| sep.first() == Some(&b':') && sep[1..].iter().all(ows))
            && rest.get(ws..ws + 2) == Some(b"\r\n");
        let line_end = if whole_line { end + ws + 2 } else { 0 };
        let (Ok(line), Ok(start), Ok(end), Ok(line_end)) = (
            u32::try_from(line),
            u32::try_from(start),
            u32::try_from(end),
            u32::try_from(line_end),
        ) else {
            return false;
        };
        self.list.push((
            name,
            Value::At {
                line,
                start,
                end,
                line_end,
            },
        ));
        true
    }

    /// Adds `name: value` at the end.
    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        self.list.push((name, Value::Own(value)));
    }

    /// The fields of `map` (an HTTP/2 request's), moved into a list: each
    /// name's fields together, in the order `map` iterates them.
    pub fn from_map(map: HeaderMap) -> ClientFields {
        let mut list = Vec::with_capacity(map.len());
        let mut last: Option<HeaderName> = None;
        for (name, value) in map {
            // `into_iter` names only the first of a name's values.
            if let Some(n) = name {
                last = Some(n);
            }
            if let Some(n) = &last {
                list.push((n.clone(), Value::Own(value)));
            }
        }
        ClientFields {
            head: Bytes::new(),
            list,
        }
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// No field at all.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn bytes<'a>(&'a self, v: &'a Value) -> &'a [u8] {
        v.bytes(&self.head)
    }

    /// Every field, in order: its name and its value's bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        self.list.iter().map(|(n, v)| (n, self.bytes(v)))
    }

    /// The values of the fields named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.list
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| self.bytes(v))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        let (_, v) = self.list.iter().find(|(n, _)| n == name)?;
        Some(self.bytes(v))
    }

    /// The first value of `name` as text, when it is visible ASCII, SP and
    /// HTAB only (what `HeaderValue::to_str` accepts).
    pub fn get_str(&self, name: &HeaderName) -> Option<&str> {
        self.get(name).and_then(as_text)
    }

    /// The first value of `name` as a `HeaderValue` of its own: a slice of the
    /// shared head (one reference count), or a clone.
    pub fn value(&self, name: &HeaderName) -> Option<HeaderValue> {
        let (_, v) = self.list.iter().find(|(n, _)| n == name)?;
        match v {
            Value::At { start, end, .. } => {
                HeaderValue::from_maybe_shared(self.head.slice(*start as usize..*end as usize)).ok()
            }
            Value::Own(v) => Some(v.clone()),
        }
    }

    /// Whether a field named `name` is present.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.list.iter().any(|(n, _)| n == name)
    }

    /// Keeps the fields `keep` says yes to (by name and value), in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&HeaderName, &[u8]) -> bool) {
        let head = &self.head;
        self.list.retain(|(n, v)| keep(n, v.bytes(head)));
    }

    /// Sets `name: value` in the place of the first field of that name, the
    /// others of that name removed; at the end when there was none (as
    /// `HeaderMap::insert` sets it in a map).
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        super::headers::insert_listed(&mut self.list, name, Value::Own(value));
    }

    /// Writes the fields `skip` says no to as an HTTP/1.1 head's field lines,
    /// in order. A field of the head goes as its line came (the name in the
    /// client's case, RFC 9110 §5.1), and a run of them that lay side by side
    /// in one copy. Any other as `name: value`. Against writing name, `": "`,
    /// value and CRLF of each, about 700 instructions fewer a browser's
    /// request (callgrind), of which finding each line's end in
    /// [`ClientFields::push_slice`] takes back about 250.
    pub fn write_lines(&self, out: &mut BytesMut, mut skip: impl FnMut(&HeaderName) -> bool) {
        let head: &[u8] = &self.head;
        // Lines of the head not yet copied: `head[run.0..run.1]`.
        let mut run = (0, 0);
        for (name, v) in &self.list {
            if skip(name) {
                continue;
            }
            match *v {
                Value::At { line, line_end, .. } if line_end != 0 => {
                    let (line, line_end) = (line as usize, line_end as usize);
                    if line != run.1 {
                        out.extend_from_slice(head.get(run.0..run.1).unwrap_or_default());
                        run.0 = line;
                    }
                    run.1 = line_end;
                }
                _ => {
                    out.extend_from_slice(head.get(run.0..run.1).unwrap_or_default());
                    run = (0, 0);
                    out.extend_from_slice(name.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(self.bytes(v));
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        out.extend_from_slice(head.get(run.0..run.1).unwrap_or_default());
    }

    /// Rough size on the wire (`name: value\r\n` each), for byte counts
    /// (`headers.rs` `wire_size`).
    pub fn wire_size(&self) -> u64 {
        super::headers::wire_size(self.iter())
    }
}

/// `value` as text when it is visible ASCII, SP and HTAB only (what
/// `HeaderValue::to_str` accepts); `None` with obs-text or control bytes.
pub fn as_text(value: &[u8]) -> Option<&str> {
    if value.iter().fold(true, |ok, &b| {
        ok & ((0x20..0x7f).contains(&b) | (b == b'\t'))
    }) {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    /// The fields of `text` (a whole head) as the guard lists them.
    fn parse(text: &'static str) -> ClientFields {
        let head = Bytes::from_static(text.as_bytes());
        let mut h = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut h);
        assert!(req.parse(&head).expect("a head").is_complete());
        let mut f = ClientFields::over(head.clone(), req.headers.len());
        for h in req.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).expect("a name");
            assert!(f.push_slice(name, h.name.as_bytes(), h.value));
        }
        f
    }

    fn written(f: &ClientFields, skip: impl FnMut(&HeaderName) -> bool) -> String {
        let mut out = BytesMut::new();
        f.write_lines(&mut out, skip);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn values_are_ranges_of_the_head() {
        let mut f = parse("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a:  2 \r\n\r\n");
        let xa = HeaderName::from_static("x-a");
        assert_eq!(f.len(), 3);
        assert_eq!(f.get(&header::HOST), Some(&b"a"[..]));
        assert_eq!(f.get_all(&xa).collect::<Vec<_>>(), vec![&b"1"[..], b"2"]);
        assert_eq!(f.value(&header::HOST), Some(HeaderValue::from_static("a")));
        assert_eq!(f.get_str(&xa), Some("1"));
        assert!(f.contains(&xa) && !f.contains(&header::COOKIE));
        // host: a, x-a: 1, x-a: 2, each with ": " and CRLF.
        assert_eq!(f.wire_size(), (4 + 1 + 4) + 2 * (3 + 1 + 4));
        f.insert(xa.clone(), HeaderValue::from_static("3"));
        assert_eq!(f.get_all(&xa).collect::<Vec<_>>(), vec![&b"3"[..]]);
        f.retain(|n, _| *n != header::HOST);
        assert_eq!(
            f.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["x-a"]
        );
    }

    #[test]
    fn lines_of_the_head_go_as_they_came_and_others_as_name_and_value() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: b  c\r\nACCEPT:\t*/* \r\nX-Gone: 1\r\nX-Kept: 2\r\n\r\n";
        let mut f = parse(text);
        assert_eq!(written(&f, |_| false), &text[16..text.len() - 2]);
        let gone = HeaderName::from_static("x-gone");
        assert_eq!(
            written(&f, |n| *n == header::HOST || *n == gone),
            "User-Agent: b  c\r\nACCEPT:\t*/* \r\nX-Kept: 2\r\n"
        );
        f.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        f.push(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            written(&f, |n| *n == header::HOST),
            "User-Agent: b  c\r\naccept: text/html\r\nX-Gone: 1\r\nX-Kept: 2\r\nupgrade: websocket\r\n"
        );
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_static("h2"));
        assert_eq!(
            written(&ClientFields::from_map(map), |_| false),
            "host: h2\r\n"
        );
    }

    #[test]
    fn a_slice_outside_the_head_is_refused() {
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nx: a-b\r\n\r\n");
        let mut f = ClientFields::over(head.clone(), 2);
        let x = HeaderName::from_static("x");
        let name = &head[16..17];
        let other = b"elsewhere".to_vec();
        assert!(!f.push_slice(x.clone(), name, &other));
        assert!(
            !f.push_slice(x.clone(), &head[19..20], name),
            "the value first"
        );
        assert!(f.push_slice(x.clone(), name, &head[19..20]));
        assert!(f.push_slice(x.clone(), name, &head[head.len()..]));
        // A name that does not start its line, or a value away from its name.
        assert!(f.push_slice(x.clone(), &head[17..18], &head[19..22]));
        assert!(f.push_slice(x.clone(), &head[0..1], &head[19..22]));
        assert_eq!(f.len(), 4);
        // None of them is a whole line as it came: each is written as name
        // and value.
        assert_eq!(
            written(&f, |_| false),
            "x: a\r\nx: \r\nx: a-b\r\nx: a-b\r\n"
        );
    }

    #[test]
    fn as_text_agrees_with_header_value() {
        for b in 0..=255u8 {
            let v = [b'a', b, b'z'];
            let as_map = HeaderValue::from_bytes(&v)
                .ok()
                .and_then(|h| h.to_str().ok().map(str::to_string));
            assert_eq!(as_text(&v).map(str::to_string), as_map, "{b}");
        }
        let long = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)";
        assert_eq!(as_text(long.as_bytes()), Some(long));
    }

    #[test]
    fn a_map_moves_into_a_list_with_every_value() {
        let mut m = HeaderMap::new();
        m.append(header::COOKIE, HeaderValue::from_static("a=1"));
        m.append(header::COOKIE, HeaderValue::from_static("b=2"));
        m.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        let f = ClientFields::from_map(m);
        let mut got: Vec<_> = f
            .iter()
            .map(|(n, v)| format!("{}={}", n, String::from_utf8_lossy(v)))
            .collect();
        got.sort();
        assert_eq!(got, ["accept=*/*", "cookie=a=1", "cookie=b=2"]);
    }
}
