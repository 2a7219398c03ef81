//! A cursor over a received message that never reads past its end: integers, names
//! (following compression pointers safely) and whole resource records.
//!
//! Failures are a short snake_case reason; the callers add the message id.

use super::{
    HEADER_LEN,
    name::{MAX_LABELS, MAX_NAME, push_label},
};

/// Why a message could not be read, as in [`super::Error::Malformed`].
pub(super) type Reason = &'static str;

/// A position in a message.
pub(super) struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

/// A resource record as it is on the wire, its data not interpreted.
pub(super) struct RawRecord<'a> {
    pub(super) name: String,
    pub(super) rtype: u16,
    pub(super) class: u16,
    pub(super) ttl: u32,
    /// The offset of the data in the message (names in it may point before it).
    pub(super) data_offset: usize,
    pub(super) data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at `pos` in `msg`.
    pub(super) fn new(msg: &'a [u8], pos: usize) -> Self {
        Reader { msg, pos }
    }

    /// Whether every byte has been read.
    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.msg.len()
    }

    /// The next `n` bytes, or `reason` when fewer are left.
    pub(super) fn bytes(&mut self, n: usize, reason: Reason) -> Result<&'a [u8], Reason> {
        let end = self.pos.checked_add(n).ok_or(reason)?;
        let bytes = self.msg.get(self.pos..end).ok_or(reason)?;
        self.pos = end;
        Ok(bytes)
    }

    pub(super) fn u16(&mut self, reason: Reason) -> Result<u16, Reason> {
        match *self.bytes(2, reason)? {
            [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(reason),
        }
    }

    pub(super) fn u32(&mut self, reason: Reason) -> Result<u32, Reason> {
        let bytes = self.bytes(4, reason)?;
        let bytes: [u8; 4] = bytes.try_into().map_err(|_| reason)?;
        Ok(u32::from_be_bytes(bytes))
    }

    /// The name at the cursor, in text form; the cursor moves past it (past its first
    /// pointer, if it has one).
    pub(super) fn name(&mut self) -> Result<String, Reason> {
        let (name, end) = read_name(self.msg, self.pos)?;
        self.pos = end;
        Ok(name)
    }

    /// The resource record at the cursor; `reason` when it is cut short.
    pub(super) fn record(&mut self, reason: Reason) -> Result<RawRecord<'a>, Reason> {
        let name = self.name()?;
        let rtype = self.u16(reason)?;
        let class = self.u16(reason)?;
        let ttl = self.u32(reason)?;
        let len = self.u16(reason)?;
        let data_offset = self.pos;
        let data = self.bytes(usize::from(len), reason)?;
        Ok(RawRecord {
            name,
            rtype,
            class,
            ttl,
            data_offset,
            data,
        })
    }
}

/// Reads the name at `start` in `msg`: its text form and the offset just past it.
///
/// A compression pointer must point into the message after the header and strictly
/// before the labels that led to it, so every jump goes backwards and the walk ends.
/// Labels are at most 63 bytes (the other two length-byte forms are rejected), and the
/// name at most 127 labels and 255 bytes.
pub(super) fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), Reason> {
    let mut text = String::new();
    let mut pos = start;
    // Where the labels being read began: the next pointer must point before it.
    let mut segment = start;
    // The offset past the name in the original stream: set at the first pointer.
    let mut end = None;
    let mut labels = 0;
    let mut wire_len = 1;
    loop {
        let len = *msg.get(pos).ok_or("truncated_name")?;
        match len & 0xC0 {
            0x00 if len == 0 => return Ok((text, end.unwrap_or(pos + 1))),
            0x00 => {
                let len = usize::from(len);
                let label = msg.get(pos + 1..pos + 1 + len).ok_or("truncated_name")?;
                labels += 1;
                wire_len += len + 1;
                if labels > MAX_LABELS {
                    return Err("too_many_labels");
                }
                if wire_len > MAX_NAME {
                    return Err("name_too_long");
                }
                if labels > 1 {
                    text.push('.');
                }
                push_label(&mut text, label);
                pos += 1 + len;
            }
            0xC0 => {
                let low = *msg.get(pos + 1).ok_or("truncated_name")?;
                let target = usize::from(u16::from_be_bytes([len & 0x3F, low]));
                if target >= segment {
                    return Err("pointer_not_backwards");
                }
                if target < HEADER_LEN {
                    return Err("pointer_into_header");
                }
                end.get_or_insert(pos + 2);
                segment = target;
                pos = target;
            }
            _ => return Err("label_type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header's worth of zeros, then `rest`.
    fn msg(rest: &[u8]) -> Vec<u8> {
        let mut msg = vec![0u8; HEADER_LEN];
        msg.extend_from_slice(rest);
        msg
    }

    #[test]
    fn plain_names_are_read() {
        let m = msg(b"\x04Cart\x04shop\x00rest");
        assert_eq!(read_name(&m, 12), Ok(("cart.shop".to_owned(), 23)));
        let root = msg(b"\x00");
        assert_eq!(read_name(&root, 12), Ok((String::new(), 13)));
    }

    #[test]
    fn pointers_are_followed_backwards() {
        // "shop" at 12, then "cart" and a pointer to it at 18.
        let m = msg(b"\x04shop\x00\x04cart\xC0\x0C");
        assert_eq!(read_name(&m, 18), Ok(("cart.shop".to_owned(), 25)));
        // A pointer to a pointer.
        let mut m = m;
        m.extend_from_slice(b"\x03www\xC0\x12");
        assert_eq!(read_name(&m, 25), Ok(("www.cart.shop".to_owned(), 31)));
    }

    #[test]
    fn a_pointer_to_itself_is_rejected() {
        let m = msg(b"\xC0\x0C");
        assert_eq!(read_name(&m, 12), Err("pointer_not_backwards"));
    }

    #[test]
    fn a_forward_pointer_is_rejected() {
        let m = msg(b"\xC0\x0E\x01a\x00");
        assert_eq!(read_name(&m, 12), Err("pointer_not_backwards"));
    }

    #[test]
    fn a_pointer_back_into_its_own_labels_is_rejected() {
        // "a" at 12 then a pointer to 12: following it would read "a" forever.
        let m = msg(b"\x01a\xC0\x0C");
        assert_eq!(read_name(&m, 12), Err("pointer_not_backwards"));
        // Two pointers that point at each other.
        let m = msg(b"\x01a\xC0\x10\x01b\xC0\x0C");
        assert_eq!(read_name(&m, 16), Err("pointer_not_backwards"));
    }

    #[test]
    fn a_pointer_into_the_header_is_rejected() {
        let m = msg(b"\xC0\x02");
        assert_eq!(read_name(&m, 12), Err("pointer_into_header"));
    }

    #[test]
    fn a_pointer_past_the_end_or_cut_short_is_rejected() {
        let m = msg(b"\x01a\x00\xC0");
        assert_eq!(read_name(&m, 15), Err("truncated_name"));
        let m = msg(b"\x01a\x00\x01b\xC0\x3F");
        assert_eq!(read_name(&m, 15), Err("pointer_not_backwards"));
    }

    #[test]
    fn extended_label_types_are_rejected() {
        // 0x40 would be a 64-byte label: its top bits are the reserved form 01.
        let mut rest = vec![0x40];
        rest.extend_from_slice(&[b'a'; 64]);
        rest.push(0);
        assert_eq!(read_name(&msg(&rest), 12), Err("label_type"));
        assert_eq!(read_name(&msg(b"\x80\x00"), 12), Err("label_type"));
    }

    #[test]
    fn a_label_of_63_bytes_is_the_longest() {
        let mut rest = vec![63];
        rest.extend_from_slice(&[b'a'; 63]);
        rest.push(0);
        assert_eq!(read_name(&msg(&rest), 12), Ok(("a".repeat(63), 77)));
    }

    #[test]
    fn names_over_255_bytes_are_rejected() {
        // Four labels of 63 bytes: 257 bytes.
        let mut rest = Vec::new();
        for _ in 0..4 {
            rest.push(63);
            rest.extend_from_slice(&[b'x'; 63]);
        }
        rest.push(0);
        assert_eq!(read_name(&msg(&rest), 12), Err("name_too_long"));
        // 127 labels of one byte: 255 bytes, the most.
        let rest: Vec<u8> = b"\x01a".repeat(127).into_iter().chain([0]).collect();
        assert!(read_name(&msg(&rest), 12).is_ok());
        let rest: Vec<u8> = b"\x01a".repeat(128).into_iter().chain([0]).collect();
        assert_eq!(read_name(&msg(&rest), 12), Err("too_many_labels"));
    }

    #[test]
    fn limits_count_the_labels_behind_pointers() {
        // 100 labels at 12, then 100 more pointing to them: 200 labels in all.
        let mut rest: Vec<u8> = b"\x01a".repeat(100).into_iter().chain([0]).collect();
        let second = HEADER_LEN + rest.len();
        rest.extend(b"\x01b".repeat(100));
        rest.extend_from_slice(&[0xC0, 0x0C]);
        assert_eq!(read_name(&msg(&rest), second), Err("too_many_labels"));
    }

    #[test]
    fn labels_that_run_past_the_end_are_rejected() {
        assert_eq!(read_name(&msg(b"\x05ab"), 12), Err("truncated_name"));
        assert_eq!(read_name(&msg(b"\x01a"), 12), Err("truncated_name"));
        assert_eq!(read_name(&msg(b""), 12), Err("truncated_name"));
    }

    #[test]
    fn the_reader_checks_every_length() {
        let m = [0u8, 1, 0, 0, 0, 2, 0xAA];
        let mut r = Reader::new(&m, 0);
        assert_eq!(r.u16("r"), Ok(1));
        assert_eq!(r.u32("r"), Ok(2));
        assert!(!r.at_end());
        assert_eq!(r.u16("short"), Err("short"));
        assert_eq!(r.bytes(1, "r"), Ok(&[0xAA][..]));
        assert!(r.at_end());
        assert_eq!(r.bytes(usize::MAX, "huge").err(), Some("huge"));
    }
}
