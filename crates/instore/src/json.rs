//! The syntactic JSON layer of the InStore routes (section 1.3, step 3) and `JS(v)`, our
//! reproduction of ECMAScript `JSON.stringify`.
//!
//! A general-purpose parser is not enough here: `serde_json::Value` keeps the last of two
//! duplicate members, forgets where each value sat in the body and rounds large numbers.
//! Each of those would let one signed body mean two things. This parser admits exactly the
//! values that have one meaning and one `JSON.stringify` form: unique member names at every
//! depth, member order kept, nesting at most [`DEPTH_MAX`], no lone surrogate escapes, and
//! numbers that are safe integers written without fraction or exponent.

use std::fmt::Write as _;
use std::ops::Range;

/// Deepest nesting of objects and arrays the parser admits (the top-level value is depth 1).
pub const DEPTH_MAX: usize = 32;

/// Largest integer a JavaScript sender can write exactly: 2^53 - 1.
pub const SAFE_INTEGER_MAX: i64 = 9_007_199_254_740_991;

/// A parsed value with the byte span it occupied in the body it came from. Two nodes are
/// equal when their values are: the span is where a value was read, not what it is.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    /// Byte range of the value's text in the parsed input (no surrounding whitespace).
    pub span: Range<usize>,
}

/// A JSON value as the InStore layer admits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A safe integer, |n| <= 2^53 - 1. `-0` is read as 0, as JavaScript prints it.
    Int(i64),
    String(String),
    Array(Vec<Node>),
    /// Members in received order; names are unique.
    Object(Vec<(String, Node)>),
}

/// Why a body is not admitted. Every variant is answered with 400 `MALFORMED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("invalid JSON at byte {0}")]
    Syntax(usize),
    #[error("member {0:?} appears twice in one object")]
    DuplicateMember(String),
    #[error("nesting deeper than {DEPTH_MAX}")]
    TooDeep,
    #[error("a string holds a lone surrogate escape at byte {0}")]
    LoneSurrogate(usize),
    #[error("a number at byte {0} is not an integer within 2^53 - 1")]
    NotSafeInteger(usize),
}

/// Parses a whole body. Leading and trailing JSON whitespace is allowed; anything else after
/// the value is an error.
pub fn parse(body: &[u8]) -> Result<Node, JsonError> {
    let text = std::str::from_utf8(body).map_err(|_| JsonError::NotUtf8)?;
    let mut p = Parser {
        b: text.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    let node = p.value(1)?;
    p.skip_ws();
    if p.pos != p.b.len() {
        return Err(JsonError::Syntax(p.pos));
    }
    Ok(node)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), JsonError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(JsonError::Syntax(self.pos))
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, JsonError> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(JsonError::Syntax(self.pos))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, JsonError> {
        let start = self.pos;
        let value = match self.peek() {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b't') => self.literal(b"true", Value::Bool(true))?,
            Some(b'f') => self.literal(b"false", Value::Bool(false))?,
            Some(b'n') => self.literal(b"null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            _ => return Err(JsonError::Syntax(self.pos)),
        };
        Ok(Node {
            value,
            span: start..self.pos,
        })
    }

    /// Enters an object or an array (its opening byte under the cursor): true when `close`
    /// ends it at once.
    fn open(&mut self, depth: usize, close: u8) -> Result<bool, JsonError> {
        if depth > DEPTH_MAX {
            return Err(JsonError::TooDeep);
        }
        self.pos += 1;
        self.skip_ws();
        Ok(self.closes(close))
    }

    /// After a member or an item: a `,` (another follows) or `close` (true: the end).
    fn next_or_end(&mut self, close: u8) -> Result<bool, JsonError> {
        self.skip_ws();
        if self.closes(close) {
            return Ok(true);
        }
        if self.peek() != Some(b',') {
            return Err(JsonError::Syntax(self.pos));
        }
        self.pos += 1;
        Ok(false)
    }

    /// Consumes `close` if it is under the cursor.
    fn closes(&mut self, close: u8) -> bool {
        let found = self.peek() == Some(close);
        if found {
            self.pos += 1;
        }
        found
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        let mut members: Vec<(String, Node)> = Vec::new();
        if self.open(depth, b'}')? {
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(JsonError::Syntax(self.pos));
            }
            let name = self.string()?;
            // Objects on the wire are small (tens of members), so a linear scan is cheaper
            // than a set and keeps the received order without a second structure.
            if members.iter().any(|(n, _)| *n == name) {
                return Err(JsonError::DuplicateMember(name));
            }
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let node = self.value(depth + 1)?;
            members.push((name, node));
            if self.next_or_end(b'}')? {
                return Ok(Value::Object(members));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        let mut items = Vec::new();
        if self.open(depth, b']')? {
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            if self.next_or_end(b']')? {
                return Ok(Value::Array(items));
            }
        }
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return Err(JsonError::Syntax(self.pos)),
        }
        let digits_end = self.pos;
        // A fraction or an exponent is valid JSON but never an exact integer on our wire.
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return Err(JsonError::NotSafeInteger(start));
        }
        // A leading zero followed by digits ("01") is not JSON at all.
        if let Some(b'0'..=b'9') = self.peek() {
            return Err(JsonError::Syntax(self.pos));
        }
        let digits = &self.b[digits_start..digits_end];
        if digits.len() > 16 {
            return Err(JsonError::NotSafeInteger(start));
        }
        let magnitude = digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        if magnitude > SAFE_INTEGER_MAX {
            return Err(JsonError::NotSafeInteger(start));
        }
        Ok(Value::Int(if negative { -magnitude } else { magnitude }))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let chunk = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or(JsonError::Syntax(self.pos))?;
        let mut v = 0u32;
        for &c in chunk {
            let d = (c as char)
                .to_digit(16)
                .ok_or(JsonError::Syntax(self.pos))?;
            v = v * 16 + d;
        }
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The input is valid UTF-8 and the run stops only at ASCII bytes, so the run is
            // whole characters.
            out.push_str(
                std::str::from_utf8(&self.b[run_start..self.pos])
                    .map_err(|_| JsonError::NotUtf8)?,
            );
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let escape_at = self.pos;
                    self.pos += 1;
                    let c = self.peek().ok_or(JsonError::Syntax(self.pos))?;
                    self.pos += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape(escape_at)?),
                        _ => return Err(JsonError::Syntax(escape_at)),
                    }
                }
                // A raw control character or the end of input inside a string.
                _ => return Err(JsonError::Syntax(self.pos)),
            }
        }
    }

    fn unicode_escape(&mut self, escape_at: usize) -> Result<char, JsonError> {
        let first = self.hex4()?;
        match first {
            0xD800..=0xDBFF => {
                if !self.b[self.pos..].starts_with(b"\\u") {
                    return Err(JsonError::LoneSurrogate(escape_at));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(JsonError::LoneSurrogate(escape_at));
                }
                let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                char::from_u32(code).ok_or(JsonError::LoneSurrogate(escape_at))
            }
            0xDC00..=0xDFFF => Err(JsonError::LoneSurrogate(escape_at)),
            _ => char::from_u32(first).ok_or(JsonError::Syntax(escape_at)),
        }
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.value == other.value
    }
}

impl Eq for Node {}

impl Node {
    /// A node that was not parsed from a body (built for output); its span is empty.
    pub fn new(value: Value) -> Node {
        Node { value, span: 0..0 }
    }
}

impl Value {
    /// The member `name` of an object, if this is an object that has it.
    pub fn get(&self, name: &str) -> Option<&Node> {
        match self {
            Value::Object(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The members when this is an object.
    pub fn as_object(&self) -> Option<&[(String, Node)]> {
        match self {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The JSON type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

/// `JS(v)`: the bytes ECMAScript `JSON.stringify(v)` writes for a value this parser admits.
pub fn js(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // i64's Display never writes "-0", matching JavaScript.
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, &item.value);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (name, node)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, &node.value);
            }
            out.push('}');
        }
    }
}

/// ECMAScript `QuoteJSONString` for well-formed strings: only `"`, `\` and U+0000..U+001F are
/// escaped; `/`, U+007F, U+2028, U+2029 and all non-ASCII stay literal UTF-8.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Builds the compact objects we emit, member by member, in the order written.
///
/// Every body we send is written through [`js`], so `JS(parse(body)) == body` holds by
/// construction: a receiver that re-stringifies computes the same MAC as one that hashes
/// the raw bytes.
#[derive(Debug, Default, Clone)]
pub struct ObjectBuilder {
    members: Vec<(String, Node)>,
}

impl ObjectBuilder {
    pub fn new() -> ObjectBuilder {
        ObjectBuilder::default()
    }

    /// Appends a member. Names are written by our own code, so a repeat is a programming
    /// error caught in debug builds.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> ObjectBuilder {
        debug_assert!(
            self.members.iter().all(|(n, _)| n != name),
            "member {name} written twice"
        );
        self.members
            .push((name.to_owned(), Node::new(value.into())));
        self
    }

    /// Appends a member only when `value` is present.
    pub fn field_opt<V: Into<Value>>(self, name: &str, value: Option<V>) -> ObjectBuilder {
        match value {
            Some(v) => self.field(name, v),
            None => self,
        }
    }

    pub fn build(self) -> Value {
        Value::Object(self.members)
    }

    /// The compact bytes of the object.
    pub fn to_js(self) -> String {
        js(&self.build())
    }
}

/// `From<T> for Value`, each by the conversion given.
macro_rules! value_from {
    ($($t:ty => |$v:ident| $e:expr;)*) => {$(
        impl From<$t> for Value {
            fn from($v: $t) -> Value {
                $e
            }
        }
    )*};
}

value_from! {
    &str => |s| Value::String(s.to_owned());
    String => |s| Value::String(s);
    &String => |s| Value::String(s.clone());
    i64 => |n| Value::Int(n);
    u8 => |n| Value::Int(i64::from(n));
    bool => |b| Value::Bool(b);
    Vec<Value> => |items| Value::Array(items.into_iter().map(Node::new).collect());
    ObjectBuilder => |b| b.build();
}

impl<V: Into<Value>> From<Option<V>> for Value {
    fn from(v: Option<V>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Node {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> JsonError {
        parse(s.as_bytes()).expect_err(s)
    }

    #[test]
    fn keeps_member_order_and_spans() {
        let body = r#" {"b": 1, "a" : {"x":[true,null, "s"]}} "#;
        let node = ok(body);
        assert_eq!(&body[node.span.clone()], body.trim());
        let members = node.value.as_object().unwrap();
        assert_eq!(members[0].0, "b");
        assert_eq!(members[1].0, "a");
        assert_eq!(
            &body[members[1].1.span.clone()],
            r#"{"x":[true,null, "s"]}"#
        );
        assert_eq!(&body[members[0].1.span.clone()], "1");
        assert_eq!(js(&node.value), r#"{"b":1,"a":{"x":[true,null,"s"]}}"#);
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert_eq!(
            err(r#"{"a":1,"a":2}"#),
            JsonError::DuplicateMember("a".into())
        );
        assert_eq!(
            err(r#"{"p":{"n":"1","q":[{"z":1,"z":1}]}}"#),
            JsonError::DuplicateMember("z".into())
        );
        // Two spellings of one name are one name once decoded.
        assert_eq!(
            err(r#"{"a":1,"\u0061":2}"#),
            JsonError::DuplicateMember("a".into())
        );
        ok(r#"{"a":{"a":1}}"#);
    }

    #[test]
    fn nesting_limit_is_32() {
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        ok(&deep(DEPTH_MAX));
        assert_eq!(err(&deep(DEPTH_MAX + 1)), JsonError::TooDeep);
        let objects = |n: usize| r#"{"a":"#.repeat(n - 1) + "{}" + &"}".repeat(n - 1);
        ok(&objects(DEPTH_MAX));
        assert_eq!(err(&objects(DEPTH_MAX + 1)), JsonError::TooDeep);
    }

    #[test]
    fn surrogates() {
        assert_eq!(ok(r#""\ud83d\ude00""#).value, Value::String("😀".into()));
        assert!(matches!(err(r#""\ud83d""#), JsonError::LoneSurrogate(_)));
        assert!(matches!(err(r#""\ud83dx""#), JsonError::LoneSurrogate(_)));
        assert!(matches!(
            err(r#""\ud83d\u0041""#),
            JsonError::LoneSurrogate(_)
        ));
        assert!(matches!(err(r#""\ude00""#), JsonError::LoneSurrogate(_)));
    }

    #[test]
    fn numbers_are_safe_integers_only() {
        assert_eq!(ok("9007199254740991").value, Value::Int(SAFE_INTEGER_MAX));
        assert_eq!(ok("-9007199254740991").value, Value::Int(-SAFE_INTEGER_MAX));
        assert_eq!(ok("-0").value, Value::Int(0));
        assert_eq!(js(&ok("-0").value), "0");
        for bad in [
            "9007199254740992",
            "-9007199254740992",
            "12345678901234567890123",
            "1.0",
            "1e3",
            "1E3",
            "0.5",
        ] {
            assert!(matches!(err(bad), JsonError::NotSafeInteger(_)), "{bad}");
        }
        for bad in ["01", "-", "+1", "--1", ".5", "0x10"] {
            assert!(matches!(err(bad), JsonError::Syntax(_)), "{bad}");
        }
    }

    #[test]
    fn rejects_invalid_json() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":1,}",
            "[1,]",
            "{'a':1}",
            "\"a\nb\"",
            "\"\\x\"",
            "\"\\u12\"",
            "nul",
            "{} {}",
            "\u{feff}{}",
            "{\"a\":1}\u{a0}",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse(b"\"\xff\""), Err(JsonError::NotUtf8));
    }

    /// Every escape class of `JSON.stringify`, cross-checked with serde_json's compact
    /// writer, which follows the same rules for these values.
    #[test]
    fn js_string_escapes_match_json_stringify() {
        let mut all_controls = String::new();
        for c in 0u32..0x20 {
            all_controls.push(char::from_u32(c).unwrap());
        }
        let cases: Vec<(String, &str)> = vec![
            ("\"".into(), r#""\"""#),
            ("\\".into(), r#""\\""#),
            ("\u{8}\u{c}\n\r\t".into(), r#""\b\f\n\r\t""#),
            (
                "\u{0}\u{1}\u{b}\u{1f}".into(),
                r#""\u0000\u0001\u000b\u001f""#,
            ),
            ("a/b".into(), r#""a/b""#),
            ("\u{7f}".into(), "\"\u{7f}\""),
            ("\u{2028}\u{2029}".into(), "\"\u{2028}\u{2029}\""),
            ("Málaga €😀".into(), "\"Málaga €😀\""),
            ("\u{1a}".into(), r#""\u001a""#),
        ];
        for (input, expected) in &cases {
            let got = js(&Value::String(input.clone()));
            assert_eq!(&got, expected);
            assert_eq!(got, serde_json::to_string(input).unwrap());
            // And back: our parser reads what we write.
            assert_eq!(ok(&got).value, Value::String(input.clone()));
        }
        let got = js(&Value::String(all_controls.clone()));
        assert_eq!(got, serde_json::to_string(&all_controls).unwrap());
        assert!(got.contains("\\u001e") && !got.contains("\\u001E"));
    }

    #[test]
    fn escaped_input_reproduces_literal_output() {
        let node = ok(r#"{"k":"M\u00e1laga\/x\u2028","n":-5,"t":[false]}"#);
        assert_eq!(
            js(&node.value),
            "{\"k\":\"Málaga/x\u{2028}\",\"n\":-5,\"t\":[false]}"
        );
    }

    #[test]
    fn builder_output_round_trips() {
        let body = ObjectBuilder::new()
            .field("a", "x\"y")
            .field("n", 12i64)
            .field("z", Option::<&str>::None)
            .field("l", vec![Value::from(true)])
            .field_opt("skip", Option::<i64>::None)
            .to_js();
        assert_eq!(body, r#"{"a":"x\"y","n":12,"z":null,"l":[true]}"#);
        assert_eq!(js(&ok(&body).value), body);
    }
}
