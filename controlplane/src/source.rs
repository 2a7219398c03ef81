//! The local source: a folder of YAML documents, read again when a file changes. A file
//! whose documents have problems does not replace the last good version of that file:
//! the last good configuration stays in force, and the problems are logged and kept
//! for status until the file is fixed. The last good version of every file is kept in
//! a state folder too, so that it stays in force across a restart of the control plane.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::{
    model::{Document, Problem, parse},
    validate::validate,
};

type Stamp = (Option<SystemTime>, u64);

#[derive(Debug, Default)]
pub struct LocalSource {
    dir: PathBuf,
    /// Where the last good text of each file is kept.
    keep: Option<PathBuf>,
    stamps: BTreeMap<PathBuf, Stamp>,
    /// The last good documents of each file, and their text.
    good: BTreeMap<PathBuf, Vec<Document>>,
    good_text: BTreeMap<PathBuf, String>,
    /// The last parse of each file, reused while its text is the same (a change to one
    /// file does not parse the others again).
    parsed: BTreeMap<PathBuf, (String, Vec<Document>, Vec<Problem>)>,
    problems: Vec<Problem>,
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok();
    (
        meta.as_ref().and_then(|m| m.modified().ok()),
        meta.map_or(0, |m| m.len()),
    )
}

impl LocalSource {
    /// A source for `dir`; with `keep`, last good versions are saved there and, at
    /// start, read back.
    pub fn new(dir: PathBuf, keep: Option<PathBuf>) -> Self {
        let mut source = LocalSource {
            dir,
            keep,
            ..LocalSource::default()
        };
        if let Some(keep) = &source.keep {
            for saved in yaml_files(keep) {
                let (Some(name), Ok(text)) = (saved.file_name(), std::fs::read_to_string(&saved))
                else {
                    continue;
                };
                let original = source.dir.join(name);
                let (docs, problems) = parse(&original.display().to_string(), &text);
                if problems.is_empty() {
                    source.good.insert(original.clone(), docs);
                    source.good_text.insert(original, text);
                }
            }
        }
        source
    }

    /// Saves the last good text of every file (and forgets files that are gone).
    fn persist(&self) {
        let Some(keep) = &self.keep else { return };
        if let Err(e) = std::fs::create_dir_all(keep) {
            tracing::warn!(dir = %keep.display(), error = %e, "cannot keep the last good configuration");
            return;
        }
        for saved in yaml_files(keep) {
            let name = saved.file_name().map(|n| self.dir.join(n));
            if name.is_none_or(|n| !self.good_text.contains_key(&n)) {
                let _ = std::fs::remove_file(&saved);
            }
        }
        for (file, text) in &self.good_text {
            if let Some(name) = file.file_name() {
                let _ = std::fs::write(keep.join(name), text);
            }
        }
    }

    /// Whether any file was added, removed or changed since the last `reload`.
    pub fn changed(&self) -> bool {
        let now: BTreeMap<PathBuf, Stamp> = yaml_files(&self.dir)
            .into_iter()
            .map(|p| {
                let s = stamp(&p);
                (p, s)
            })
            .collect();
        now != self.stamps
    }

    /// The problems of the files that are not in force.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Reads the folder again and returns the configuration in force: every good file,
    /// and for each bad one its last good version (or nothing, if it never was good).
    pub fn reload(&mut self) -> Vec<Document> {
        let files = yaml_files(&self.dir);
        self.stamps = files
            .iter()
            .map(|p| {
                let s = stamp(p);
                (p.clone(), s)
            })
            .collect();
        let mut candidate: BTreeMap<PathBuf, Vec<Document>> = BTreeMap::new();
        let mut fresh: BTreeMap<PathBuf, (Vec<Document>, String)> = BTreeMap::new();
        self.parsed.retain(|f, _| files.contains(f));
        let mut problems = Vec::new();
        for f in &files {
            let source = f.display().to_string();
            match std::fs::read_to_string(f) {
                Ok(text) => {
                    let (docs, p) = match self.parsed.get(f) {
                        Some((old, docs, p)) if *old == text => (docs.clone(), p.clone()),
                        _ => {
                            let (docs, p) = parse(&source, &text);
                            self.parsed
                                .insert(f.clone(), (text.clone(), docs.clone(), p.clone()));
                            (docs, p)
                        }
                    };
                    if p.is_empty() {
                        candidate.insert(f.clone(), docs.clone());
                        fresh.insert(f.clone(), (docs, text));
                    } else {
                        problems.extend(p);
                        if let Some(old) = self.good.get(f) {
                            candidate.insert(f.clone(), old.clone());
                        }
                    }
                }
                Err(e) => tracing::warn!(file = %source, error = %e, "cannot read"),
            }
        }
        problems.extend(keep_last_good(&mut candidate, &self.good, |p| {
            PathBuf::from(&p.origin.source)
        }));
        problems.dedup();
        for p in &problems {
            tracing::warn!(problem = %p, "configuration refused; the last good version stays in force");
        }
        self.problems = problems;
        // What is in force from its new version becomes the last good text.
        self.good_text.retain(|f, _| candidate.contains_key(f));
        for (f, docs) in &candidate {
            if let Some((new_docs, text)) = fresh.get(f)
                && new_docs == docs
            {
                self.good_text.insert(f.clone(), text.clone());
            }
        }
        self.good = candidate;
        self.persist();
        self.good.values().flatten().cloned().collect()
    }
}

/// Validates `candidate` (the new version of each unit of configuration: a file, a
/// Kubernetes object) as a set. A unit with a problem falls back to its version in
/// `good` (or leaves the set, if it never was good), until the set is clean; each round
/// takes back at least one new version. Returns every problem found on the way. Units
/// are named by `unit_of`, from the origin of a problem.
pub(crate) fn keep_last_good<K: Ord + Clone>(
    candidate: &mut BTreeMap<K, Vec<Document>>,
    good: &BTreeMap<K, Vec<Document>>,
    unit_of: impl Fn(&Problem) -> K,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for _ in 0..=candidate.len() {
        let all: Vec<Document> = candidate.values().flatten().cloned().collect();
        let found = validate(&all);
        if found.is_empty() {
            break;
        }
        let mut reverted = false;
        for p in &found {
            let unit = unit_of(p);
            let new = candidate.get(&unit);
            let old = good.get(&unit);
            if new != old {
                match old {
                    Some(old) => candidate.insert(unit, old.clone()),
                    None => candidate.remove(&unit),
                };
                reverted = true;
            }
        }
        for p in found {
            if !problems.contains(&p) {
                problems.push(p);
            }
        }
        if !reverted {
            // The last good set itself no longer validates (a unit it referred to is
            // gone): keep it as it is rather than serve nothing.
            break;
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_keeps_its_last_good_version() {
        let dir = std::env::temp_dir().join(format!("weft-source-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
        std::fs::write(dir.join("ns.yaml"), ns).unwrap();
        let wl = |addr: &str| {
            format!(
                "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w, namespace: shop}}\nspec: {{node: n1, addresses: [{addr}]}}\n"
            )
        };
        std::fs::write(dir.join("w.yaml"), wl("10.0.0.1")).unwrap();
        let keep = dir.join("keep");
        let mut s = LocalSource::new(dir.clone(), Some(keep.clone()));
        assert_eq!(s.reload().len(), 2);
        assert!(s.problems().is_empty());

        std::fs::write(dir.join("w.yaml"), wl("10.0.0.999")).unwrap();
        assert!(s.changed());
        let docs = s.reload();
        assert_eq!(docs.len(), 2, "the last good workload stays");
        assert!(format!("{docs:?}").contains("10.0.0.1"));
        assert_eq!(s.problems()[0].path, "spec.addresses[0]");

        // After a restart the last good version is still in force.
        let mut restarted = LocalSource::new(dir.clone(), Some(keep.clone()));
        let docs = restarted.reload();
        assert!(format!("{docs:?}").contains("10.0.0.1"), "{docs:?}");
        assert_eq!(restarted.problems()[0].path, "spec.addresses[0]");

        // A new file with a problem is simply not taken.
        std::fs::write(
            dir.join("x.yaml"),
            "kind: Nope\napiVersion: v1\nmetadata: {name: x}\n",
        )
        .unwrap();
        assert_eq!(s.reload().len(), 2);
        assert_eq!(s.problems().len(), 2);

        // Fixed: the new version is in force and the problems are gone.
        std::fs::write(dir.join("w.yaml"), wl("10.0.0.2")).unwrap();
        std::fs::remove_file(dir.join("x.yaml")).unwrap();
        let docs = s.reload();
        assert!(format!("{docs:?}").contains("10.0.0.2"));
        assert!(s.problems().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
