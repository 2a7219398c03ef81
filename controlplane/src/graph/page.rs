//! The page at `/graph`: a legend, the picture, and a few lines of script that fetch
//! `graph.svg` again every five seconds (nothing loaded from anywhere else).

/// The page; `query` (the request's, e.g. `namespace=shop`) is passed on to the picture.
pub fn html(query: &str) -> String {
    // The query was checked by the caller (window and namespace only hold [a-z0-9-]);
    // anything else is dropped here rather than written into the page.
    let query: String = query
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '&' | '-'))
        .collect();
    PAGE.replace("{query}", &query)
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Weft service graph</title>
<style>
body { font-family: sans-serif; margin: 16px; color: #222; }
header { display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
h1 { font-size: 20px; margin: 0 0 8px 0; }
.legend span { margin-right: 16px; font-size: 13px; }
.mtls { color: #2e7d32; } .plaintext { color: #e65100; } .denied { color: #c62828; }
#status { font-size: 12px; color: #666; }
#graph { margin-top: 12px; overflow: auto; }
</style>
</head>
<body>
<header>
<h1>Weft service graph</h1>
<div class="legend">
<span class="mtls">&#9473; mutual TLS</span>
<span class="plaintext">&#9476; plaintext</span>
<span class="denied">&#9473; denied by policy</span>
<span><svg width="12" height="14" viewBox="0 0 10 14"><path d="M2,6V3.5a3,3 0 0 1 6,0V6" fill="none" stroke="#1565c0" stroke-width="1.6"/><rect x="0" y="6" width="10" height="8" rx="1.5" fill="#1565c0"/></svg> in the mesh &middot; dashed box: not in the mesh</span>
</div>
<div id="status">loading&hellip;</div>
</header>
<div id="graph"></div>
<script>
const query = "{query}";
async function refresh() {
  const status = document.getElementById("status");
  try {
    const answer = await fetch("graph.svg" + (query ? "?" + query : ""), { cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status + ": " + (await answer.text()));
    document.getElementById("graph").innerHTML = await answer.text();
    const svg = document.querySelector("#graph svg");
    status.textContent = "updated " + new Date().toLocaleTimeString() + " · "
      + svg.dataset.nodes + " nodes, " + svg.dataset.edges + " edges, rates over "
      + svg.dataset.window;
    document.body.dataset.loaded = "true";
  } catch (e) {
    status.textContent = "cannot update: " + e.message;
  }
}
refresh();
setInterval(refresh, 5000);
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_asks_for_the_picture_with_the_same_query_and_nothing_else() {
        let page = html("namespace=shop&window=30s");
        assert!(page.contains(r#"const query = "namespace=shop&window=30s";"#));
        assert!(!page.contains("http://") && !page.contains("https://"));
        let page = html(r#"x";alert(1);//"#);
        assert!(page.contains(r#"const query = "xalert1";"#), "{page}");
    }
}
