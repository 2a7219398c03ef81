//! Domain names between their wire form (length-prefixed labels, RFC 1035 section
//! 3.1) and their text form (see the module documentation of `wire`), and the
//! compression of names in messages the agent writes (section 4.1.4).

use std::fmt::Write as _;

/// The longest label, in bytes.
pub(super) const MAX_LABEL: usize = 63;
/// The longest name in wire form, in bytes, counting every length byte and the root.
pub(super) const MAX_NAME: usize = 255;
/// The most labels a name can have (each takes at least two bytes of the 255).
pub(super) const MAX_LABELS: usize = 127;
/// The largest offset a compression pointer can hold.
const MAX_POINTER: usize = 0x3FFF;

/// Appends the text form of a label: ASCII letters lower-cased, a dot or backslash
/// escaped with a backslash, bytes other than printable ASCII as `\DDD`.
pub(super) fn push_label(text: &mut String, label: &[u8]) {
    for &byte in label {
        match byte {
            b'.' | b'\\' => {
                text.push('\\');
                text.push(char::from(byte));
            }
            b'!'..=b'~' => text.push(char::from(byte.to_ascii_lowercase())),
            _ => {
                let _ = write!(text, "\\{byte:03}");
            }
        }
    }
}

/// The labels of a name in text form, or `None` when it is not a valid name: an empty
/// label, a label longer than 63 bytes, more than 255 bytes in wire form, or a bad
/// escape. `""` and `"."` are the root (no labels); one trailing dot is allowed. Case is
/// kept.
pub(super) fn parse_text(name: &str) -> Option<Vec<Vec<u8>>> {
    if name.is_empty() || name == "." {
        return Some(Vec::new());
    }
    let mut labels = Vec::new();
    let mut label = Vec::new();
    let mut wire_len = 1;
    let mut bytes = name.bytes();
    let mut trailing_dot = false;
    while let Some(byte) = bytes.next() {
        trailing_dot = false;
        match byte {
            b'.' => {
                if label.is_empty() {
                    return None;
                }
                wire_len += label.len() + 1;
                labels.push(std::mem::take(&mut label));
                trailing_dot = true;
            }
            b'\\' => {
                let escaped = bytes.next()?;
                if escaped.is_ascii_digit() {
                    let digits = [escaped, bytes.next()?, bytes.next()?];
                    let mut value = 0u16;
                    for digit in digits {
                        if !digit.is_ascii_digit() {
                            return None;
                        }
                        value = value * 10 + u16::from(digit - b'0');
                    }
                    label.push(u8::try_from(value).ok()?);
                } else {
                    label.push(escaped);
                }
            }
            _ => label.push(byte),
        }
        if label.len() > MAX_LABEL {
            return None;
        }
    }
    if !label.is_empty() {
        wire_len += label.len() + 1;
        labels.push(label);
    } else if !trailing_dot {
        return None;
    }
    (wire_len <= MAX_NAME && labels.len() <= MAX_LABELS).then_some(labels)
}

/// Writes names into a message, replacing a suffix already written (compared without
/// regard to ASCII case) by a pointer to it.
#[derive(Debug, Default)]
pub(super) struct NameWriter {
    /// Every suffix written so far, with its offset in the message.
    written: Vec<(Vec<Vec<u8>>, u16)>,
}

impl NameWriter {
    /// Appends `labels` to `out`, which holds the message from its first byte.
    pub(super) fn write(&mut self, out: &mut Vec<u8>, labels: &[Vec<u8>]) {
        for (i, label) in labels.iter().enumerate() {
            let suffix = labels.get(i..).unwrap_or_default();
            if let Some(offset) = self.find(suffix) {
                out.extend_from_slice(&(0xC000 | offset).to_be_bytes());
                return;
            }
            if let Ok(offset) = u16::try_from(out.len())
                && usize::from(offset) <= MAX_POINTER
            {
                self.written.push((suffix.to_vec(), offset));
            }
            // Labels come from `parse_text`, so their length fits in the low six bits.
            out.push(u8::try_from(label.len()).unwrap_or(0));
            out.extend_from_slice(label);
        }
        out.push(0);
    }

    fn find(&self, suffix: &[Vec<u8>]) -> Option<u16> {
        self.written.iter().find_map(|(written, offset)| {
            let same = written.len() == suffix.len()
                && written
                    .iter()
                    .zip(suffix)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b));
            same.then_some(*offset)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(label: &[u8]) -> String {
        let mut text = String::new();
        push_label(&mut text, label);
        text
    }

    fn labels(names: &[&str]) -> Vec<Vec<u8>> {
        names.iter().map(|l| l.as_bytes().to_vec()).collect()
    }

    #[test]
    fn labels_are_lower_cased_and_escaped() {
        assert_eq!(text(b"Cart-1"), "cart-1");
        assert_eq!(text(b"a.b"), "a\\.b");
        assert_eq!(text(b"a\\b"), "a\\\\b");
        assert_eq!(text(b"a b\x00\xff"), "a\\032b\\000\\255");
        assert_eq!(text(b"_svc*"), "_svc*");
    }

    #[test]
    fn text_parses_into_labels() {
        assert_eq!(parse_text(""), Some(vec![]));
        assert_eq!(parse_text("."), Some(vec![]));
        assert_eq!(parse_text("a.Bc"), Some(labels(&["a", "Bc"])));
        assert_eq!(parse_text("a.bc."), Some(labels(&["a", "bc"])));
        assert_eq!(parse_text("a\\.b.c"), Some(labels(&["a.b", "c"])));
        assert_eq!(parse_text("a\\\\.c"), Some(labels(&["a\\", "c"])));
        assert_eq!(parse_text("a\\032b\\255"), Some(vec![b"a b\xff".to_vec()]));
    }

    #[test]
    fn invalid_text_is_rejected() {
        for name in [
            "..", ".a", "a..b", "a.b..", "a\\", "a\\25", "a\\2x5", "a\\256",
        ] {
            assert_eq!(parse_text(name), None, "{name:?}");
        }
        assert!(parse_text(&"a".repeat(63)).is_some());
        assert_eq!(parse_text(&"a".repeat(64)), None);
        assert_eq!(parse_text(&format!("{}.b", "a".repeat(64))), None);
    }

    #[test]
    fn text_longer_than_255_wire_bytes_is_rejected() {
        // 127 labels of one byte take 254 bytes with the root: the most there can be.
        let longest = vec!["a"; 127].join(".");
        assert_eq!(parse_text(&longest).map(|l| l.len()), Some(127));
        assert_eq!(parse_text(&vec!["a"; 128].join(".")), None);
        // Four labels of 63 bytes take 257 bytes.
        let label = "b".repeat(63);
        assert_eq!(parse_text(&[label.as_str(); 4].join(".")), None);
        let three = [label.as_str(); 3].join(".");
        // 3 * 64 + 1 = 193 bytes; 61 more bytes of labels make 254, 62 make 255.
        assert!(parse_text(&format!("{}.{three}", "c".repeat(60))).is_some());
        assert!(parse_text(&format!("{}.{three}", "c".repeat(61))).is_some());
        assert_eq!(parse_text(&format!("{}.{three}", "c".repeat(62))), None);
    }

    #[test]
    fn text_round_trips_through_labels() {
        for name in ["", "cart.shop.svc.cluster.local", "a\\.b.c", "x\\032y\\000"] {
            let parsed = parse_text(name).unwrap();
            let mut back = String::new();
            for (i, label) in parsed.iter().enumerate() {
                if i > 0 {
                    back.push('.');
                }
                push_label(&mut back, label);
            }
            assert_eq!(back, name);
        }
    }

    #[test]
    fn repeated_suffixes_become_pointers() {
        let mut out = vec![0u8; 12];
        let mut writer = NameWriter::default();
        writer.write(&mut out, &labels(&["cart", "shop"]));
        assert_eq!(out.get(12..), Some(&b"\x04cart\x04shop\x00"[..]));
        writer.write(&mut out, &labels(&["CART", "Shop"]));
        assert_eq!(out.get(23..), Some(&[0xC0, 12][..]));
        writer.write(&mut out, &labels(&["www", "shop"]));
        assert_eq!(out.get(25..), Some(&b"\x03www\xC0\x11"[..]));
        writer.write(&mut out, &[]);
        assert_eq!(out.get(31..), Some(&[0][..]));
    }
}
