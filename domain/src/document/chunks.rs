//! Splitting a document into the pieces search finds: by Markdown headings, then paragraphs,
//! packed to about [`TARGET_CHARS`] with about [`OVERLAP_CHARS`] repeated between consecutive
//! chunks of a section, never cut inside a word.
//!
//! A chunk is a contiguous slice of the content: `text` is the characters `char_start..char_end`
//! (counted in Unicode scalar values, as Postgres counts them). Words are separated by white space;
//! between two CJK characters is a word boundary too, so text without spaces still splits. A single
//! word longer than a chunk (a long URL, a blob) stays whole in a chunk of its own.

/// The size a chunk is packed to, in characters.
pub const TARGET_CHARS: usize = 1_000;
/// The characters a chunk repeats from the end of the one before it in the same section.
pub const OVERLAP_CHARS: usize = 150;
/// The longest piece a paragraph is cut into, so that overlap and piece fit the target.
const PIECE_CHARS: usize = TARGET_CHARS - OVERLAP_CHARS;
/// What joins the headings of a chunk's path.
pub const HEADING_SEPARATOR: &str = " › ";

/// One searchable piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its place among the document's chunks, from 0.
    pub ordinal: u32,
    /// The headings it sits under, outermost first, joined by [`HEADING_SEPARATOR`]; empty
    /// before the first heading.
    pub heading: String,
    pub text: String,
    /// Its first character's index in the content.
    pub char_start: usize,
    /// One past its last character's index in the content.
    pub char_end: usize,
}

/// The chunks of `content`, in order. Empty only for content that is all white space.
pub fn split(content: &str) -> Vec<Chunk> {
    let mut ranges: Vec<(String, usize, usize)> = Vec::new();
    for (heading, start, end) in sections(content) {
        let mut units = Vec::new();
        for (s, e) in paragraphs(content, start, end) {
            pieces(content, s, e, &mut units);
        }
        pack(content, &units, |s, e| ranges.push((heading.clone(), s, e)));
    }
    if ranges.is_empty() {
        // Headings alone: the whole text is the one chunk.
        let (s, e) = trimmed(content, 0, content.len());
        if s < e {
            ranges.push((String::new(), s, e));
        }
    }
    let mut starts = CharCursor::default();
    let mut ends = CharCursor::default();
    ranges
        .into_iter()
        .enumerate()
        .map(|(ordinal, (heading, s, e))| Chunk {
            ordinal: ordinal as u32,
            heading,
            text: content[s..e].to_owned(),
            char_start: starts.at(content, s),
            char_end: ends.at(content, e),
        })
        .collect()
}

/// Byte offsets to character offsets, for offsets that never decrease.
#[derive(Default)]
struct CharCursor {
    byte: usize,
    chars: usize,
}

impl CharCursor {
    fn at(&mut self, content: &str, byte: usize) -> usize {
        debug_assert!(byte >= self.byte, "offsets are asked for in order");
        self.chars += content[self.byte..byte].chars().count();
        self.byte = byte;
        self.chars
    }
}

/// Each section's heading path and its body's byte range (after its heading line). Lines in
/// fenced code blocks are never headings.
fn sections(content: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut body_start = 0;
    let mut at = 0;
    let mut fenced = false;
    for line in content.split_inclusive('\n') {
        let line_start = at;
        at += line.len();
        let stripped = line.trim_start_matches(' ');
        if line.len() - stripped.len() <= 3 && (stripped.starts_with("```") || stripped.starts_with("~~~")) {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let Some((level, text)) = heading(line) else { continue };
        out.push((joined(&path), body_start, line_start));
        while path.last().is_some_and(|(l, _)| *l >= level) {
            path.pop();
        }
        path.push((level, text));
        body_start = at;
    }
    out.push((joined(&path), body_start, content.len()));
    out
}

fn joined(path: &[(usize, String)]) -> String {
    path.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(HEADING_SEPARATOR)
}

/// An ATX heading's level and text: up to three spaces, 1 to 6 `#`, a space or the line's end.
fn heading(line: &str) -> Option<(usize, String)> {
    let stripped = line.trim_start_matches(' ');
    if line.len() - stripped.len() > 3 {
        return None;
    }
    let level = stripped.chars().take_while(|c| *c == '#').count();
    let rest = &stripped[level..];
    if !(1..=6).contains(&level) || !(rest.trim().is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim_end();
    Some((level, text.to_owned()))
}

/// `start..end` without white space at either end.
fn trimmed(content: &str, start: usize, end: usize) -> (usize, usize) {
    let slice = &content[start..end];
    let s = start + (slice.len() - slice.trim_start().len());
    let e = start + slice.trim_end().len();
    (s, e.max(s))
}

/// The paragraphs of `start..end`: runs of lines between blank lines, trimmed.
fn paragraphs(content: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut paragraph_start = start;
    let mut at = start;
    for line in content[start..end].split_inclusive('\n') {
        if line.trim().is_empty() {
            let (s, e) = trimmed(content, paragraph_start, at);
            if s < e {
                out.push((s, e));
            }
            paragraph_start = at + line.len();
        }
        at += line.len();
    }
    let (s, e) = trimmed(content, paragraph_start, end);
    if s < e {
        out.push((s, e));
    }
    out
}

fn is_cjk(c: char) -> bool {
    matches!(u32::from(c), 0x3000..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF)
}

/// Whether a word may begin at `c` after `previous`.
fn word_starts(previous: char, c: char) -> bool {
    (previous.is_whitespace() && !c.is_whitespace()) || (is_cjk(previous) && is_cjk(c))
}

/// Cuts the paragraph `start..end` into pieces of at most [`PIECE_CHARS`] characters at word
/// boundaries (a longer word is a piece of its own), appended to `out`.
fn pieces(content: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let mut piece_start = start;
    let mut count = 0;
    let mut last_break: Option<usize> = None;
    let mut previous: Option<char> = None;
    let mut cut = |piece_start: &mut usize, at: usize| {
        let (s, e) = trimmed(content, *piece_start, at);
        if s < e {
            out.push((s, e));
        }
        *piece_start = at;
    };
    for (i, c) in content[start..end].char_indices() {
        let at = start + i;
        if at > piece_start && previous.is_some_and(|p| word_starts(p, c)) {
            if count > PIECE_CHARS {
                // An oversized word ends here.
                cut(&mut piece_start, at);
                count = 0;
                last_break = None;
            } else {
                last_break = Some(at);
            }
        }
        count += 1;
        if count > PIECE_CHARS {
            if let Some(b) = last_break.take() {
                cut(&mut piece_start, b);
                count = content[b..at + c.len_utf8()].chars().count();
            }
        }
        previous = Some(c);
    }
    cut(&mut piece_start, end);
}

/// Packs a section's pieces into chunks of about [`TARGET_CHARS`], each after the first starting
/// about [`OVERLAP_CHARS`] before the previous one's end, at a word.
fn pack(content: &str, units: &[(usize, usize)], mut emit: impl FnMut(usize, usize)) {
    let Some(&(first, _)) = units.first() else { return };
    let chars = |s: usize, e: usize| content[s..e].chars().count();
    let mut chunk_start = first;
    let mut i = 0;
    while i < units.len() {
        let mut end = units[i].1;
        let mut count = chars(chunk_start, end);
        let mut j = i + 1;
        while j < units.len() {
            let more = chars(end, units[j].1);
            if count + more > TARGET_CHARS {
                break;
            }
            count += more;
            end = units[j].1;
            j += 1;
        }
        emit(chunk_start, end);
        if j == units.len() {
            break;
        }
        chunk_start = overlap_start(content, chunk_start, end).unwrap_or(units[j].0);
        i = j;
    }
}

/// Where the next chunk begins: the first word that starts within the last [`OVERLAP_CHARS`]
/// characters of `start..end`, if one does.
fn overlap_start(content: &str, start: usize, end: usize) -> Option<usize> {
    let slice = &content[start..end];
    let from = slice.char_indices().rev().nth(OVERLAP_CHARS - 1).map_or(0, |(i, _)| i);
    let mut previous = slice[..from].chars().next_back();
    for (i, c) in slice[from..].char_indices() {
        if previous.is_some_and(|p| word_starts(p, c)) {
            return Some(start + from + i);
        }
        previous = Some(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk is its slice of the content, starts and ends at a word, and the chunks are in order.
    fn check(content: &str, chunks: &[Chunk]) {
        let all: Vec<char> = content.chars().collect();
        for (n, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.ordinal as usize, n);
            let slice: String = all[chunk.char_start..chunk.char_end].iter().collect();
            assert_eq!(slice, chunk.text, "chunk {n}");
            assert!(!chunk.text.is_empty() && chunk.text.trim() == chunk.text, "chunk {n} is trimmed");
            if chunk.char_start > 0 {
                let (before, first) = (all[chunk.char_start - 1], all[chunk.char_start]);
                assert!(word_starts(before, first), "chunk {n} starts at a word: {before:?} {first:?}");
            }
            if chunk.char_end < all.len() {
                let (last, after) = (all[chunk.char_end - 1], all[chunk.char_end]);
                assert!(word_starts(last, after) || after.is_whitespace(), "chunk {n} ends at a word");
            }
            if n > 0 {
                assert!(chunk.char_start > chunks[n - 1].char_start && chunk.char_end > chunks[n - 1].char_end);
            }
        }
    }

    fn words(n: usize, word: &str) -> String {
        (0..n).map(|i| format!("{word}{i}")).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn a_tiny_document_is_one_chunk() {
        let content = "Just a note.";
        let chunks = split(content);
        assert_eq!(
            chunks,
            [Chunk { ordinal: 0, heading: String::new(), text: content.into(), char_start: 0, char_end: 12 }]
        );
        assert!(split(" \n\n ").is_empty());
        let headings_only = split("# Title\n## Sub\n");
        assert_eq!(headings_only.len(), 1);
        check("# Title\n## Sub\n", &headings_only);
    }

    #[test]
    fn a_long_document_splits_by_headings_then_paragraphs_with_overlap() {
        let paragraph = |w: &str| words(80, w); // about 300 characters
        let content = format!(
            "Intro line.\n\n# Deploys\n\n{}\n\n{}\n\n## Rollback\n\n{}\n\n{}\n\n{}\n\n{}\n\n# Other\n\nshort\n",
            paragraph("a"),
            paragraph("b"),
            paragraph("c"),
            paragraph("d"),
            paragraph("e"),
            paragraph("f"),
        );
        let chunks = split(&content);
        check(&content, &chunks);
        let headings: Vec<&str> = chunks.iter().map(|c| c.heading.as_str()).collect();
        assert_eq!(headings, ["", "Deploys", "Deploys › Rollback", "Deploys › Rollback", "Other"]);
        assert_eq!(chunks[0].text, "Intro line.");
        for chunk in &chunks {
            assert!(chunk.text.chars().count() <= TARGET_CHARS, "{}", chunk.text.chars().count());
        }
        // The two chunks of Rollback share about OVERLAP_CHARS, at a word.
        let (a, b) = (&chunks[2], &chunks[3]);
        let shared = a.char_end - b.char_start;
        assert!((OVERLAP_CHARS - 10..=OVERLAP_CHARS).contains(&shared), "{shared}");
        assert!(a.text.ends_with(&b.text[..b.text.find("\n\n").unwrap()]));
        // No overlap across sections.
        assert!(chunks[1].char_end <= chunks[2].char_start);
    }

    #[test]
    fn a_document_without_headings_and_a_single_huge_paragraph() {
        let content = words(2_000, "word"); // about 14,000 characters, one paragraph
        let chunks = split(&content);
        check(&content, &chunks);
        assert!(chunks.len() > 14, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.heading.is_empty() && c.text.chars().count() <= TARGET_CHARS));
        assert_eq!(chunks.last().unwrap().char_end, content.chars().count());
        for pair in chunks.windows(2) {
            assert!(pair[1].char_start < pair[0].char_end, "consecutive chunks overlap");
        }
        // A word longer than a chunk stays whole.
        let blob = "x".repeat(3 * TARGET_CHARS);
        let content = format!("before {blob} after");
        let chunks = split(&content);
        check(&content, &chunks);
        assert!(chunks.iter().any(|c| c.text.contains(&blob)));
    }

    #[test]
    fn cjk_and_emoji_split_on_character_boundaries() {
        let cjk = "知識ベースの文書を検索します。".repeat(200); // no spaces at all
        let chunks = split(&cjk);
        check(&cjk, &chunks);
        assert!(chunks.len() > 2 && chunks.iter().all(|c| c.text.chars().count() <= TARGET_CHARS));
        let emoji = words(600, "👩‍💻🚀");
        let chunks = split(&emoji);
        check(&emoji, &chunks);
        assert!(chunks.len() > 2);
        assert!(chunks.iter().all(|c| !c.text.starts_with('\u{200d}') && !c.text.ends_with('\u{200d}')));
    }

    #[test]
    fn headings_in_code_fences_are_text() {
        let content = "# Real\n\n```\n# not a heading\n```\n";
        let chunks = split(content);
        check(content, &chunks);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].heading, "Real");
        assert!(chunks[0].text.contains("# not a heading"));
    }
}
