//! The validation corpus: every file under `corpus/bad` holds documents with one
//! mistake and says on its first line which field path and reason must be reported
//! (`# expect: <path> :: <words of the reason>`); every file under `corpus/good` must
//! validate without a problem.

use std::path::{Path, PathBuf};

use controlplane::validate;

fn corpus(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_bad_document_is_refused_with_its_field_path() {
    let files = corpus("bad");
    assert!(files.len() >= 30, "the corpus has {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no expect line", file.display()));
        let (path, words) = expect.split_once(" :: ").unwrap();
        let (_, problems) = validate::files(std::slice::from_ref(&file));
        assert!(
            problems
                .iter()
                .any(|p| p.path == path && p.reason.contains(words)),
            "{}: expected `{path}: …{words}…`, got:\n{}",
            file.display(),
            problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn good_documents_pass() {
    for file in corpus("good") {
        let (docs, problems) = validate::files(std::slice::from_ref(&file));
        assert!(!docs.is_empty());
        assert!(
            problems.is_empty(),
            "{}:\n{}",
            file.display(),
            problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
