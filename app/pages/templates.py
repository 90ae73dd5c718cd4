"""Templates: library, upload with the preflight report, placeholder editor, preview, generation jobs, outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app.components.errors import handled, show_error
from app.components.guard import page_context
from app.components.tables import table_with_csv
from app.components.template_view import (
    SOURCE_LABELS,
    SOURCES,
    TYPES,
    from_simple,
    preflight_report,
    provenance_rows,
    simple_fields,
    usage_panel,
)
from core.services.templates import RecordFilter, TemplateService

ctx = page_context("templates")
svc: TemplateService = ctx.services.templates
SAMPLES = Path(__file__).resolve().parents[2] / "data" / "templates"
PENDING = "tpl_pending"  # {filename, data, report} of the upload waiting for acceptance
PREVIEW = "tpl_preview"  # {template id: PreviewResult} of this session
FLASH = "tpl_flash"



def pick(label: str, options: dict[str, str], key: str, index: int = 0) -> str | None:
    """A selectbox over display labels that returns the chosen id (labels must be unique)."""
    if not options:
        st.selectbox(label, ["(none)"], key=key, disabled=True)
        return None
    by_label = {v: k for k, v in options.items()}
    chosen = st.selectbox(label, list(by_label), index=min(index, len(by_label) - 1), key=key)
    return by_label.get(chosen) if chosen is not None else None


st.title("Templates")
tenant = ctx.one_tenant(key="templates_tenant")
st.caption("Upload Word and PowerPoint templates (or link Google Docs and Slides), check them, say where each "
           "placeholder's value comes from, preview with real CRM data and generate documents.")

flash = st.session_state.pop(FLASH, None)
if flash:
    st.success(flash)

with handled():
    usage_panel(svc.usage(ctx.principal, tenant))

templates: list[dict[str, Any]] = []
with handled():
    templates = svc.list_templates(ctx.principal, tenant)
by_id = {t["id"]: t for t in templates}
linked = st.query_params.get("template")
if linked and linked not in by_id:
    st.warning(f"Template {linked} is not in this tenant's library (archived or another tenant's).")
ids = list(by_id)
selected_id: str | None = None
if ids:
    index = ids.index(linked) if linked in by_id else 0
    labels = {i: f"{t['name']} · {t['kind']} v{t['currentVersion']} · {i}" for i, t in by_id.items()}
    if linked in by_id and st.session_state.get("tpl_link_seen") != linked:
        st.session_state["tpl_pick"] = labels[linked]  # a link opened now wins over the last pick
    selected_id = pick("Template", labels, key="tpl_pick", index=index)
    if selected_id != linked and selected_id is not None:
        st.query_params["template"] = selected_id
    st.session_state["tpl_link_seen"] = selected_id
selected = by_id.get(selected_id) if selected_id else None

tab_lib, tab_up, tab_cfg, tab_prev, tab_gen, tab_out = st.tabs(
    ["Library", "Upload", "Placeholders", "Preview", "Generate", "Outputs"])

# library ---------------------------------------------------------------------------------------------------------
with tab_lib:
    rows = [{"name": t["name"], "kind": t["kind"], "version": t["currentVersion"],
             "placeholders": len(t["versions"][-1]["placeholders"]), "configured": t.get("configured", False),
             "generates per": t.get("objectType"), "updated": t.get("updatedAt", "")[:16], "id": t["id"]}
            for t in templates]
    table_with_csv(rows, key="tpl_library", file_name="templates.csv",
                   empty="No templates yet: upload one, or start from a sample in the Upload tab.")
    if selected:
        st.subheader(f"Versions of {selected['name']}")
        st.dataframe(pd.DataFrame([{"version": v["version"], "file": v.get("filename") or v.get("url"),
                                    "sha256": (v.get("sha256") or "")[:16], "placeholders": len(v["placeholders"]),
                                    "added": v["createdAt"][:16], "by": v["createdBy"], "reason": v.get("reason")}
                                   for v in selected["versions"]]), hide_index=True, width="stretch",
                     key="tpl_versions")
        with st.form("tpl_archive_form"):
            reason = st.text_input("Reason to archive", key="tpl_archive_reason")
            if st.form_submit_button("Archive template"):
                with handled():
                    svc.archive(ctx.principal, tenant, selected["id"], reason)
                    st.session_state[FLASH] = f"Archived {selected['name']}."
                    del st.query_params["template"]
                    st.rerun()

# upload ----------------------------------------------------------------------------------------------------------
with tab_up:
    source = st.radio("Source", ["Upload a file", "Start from a sample", "Link a Google file",
                                 "Add an image for image placeholders"], horizontal=True, key="tpl_upload_source")
    if source == "Add an image for image placeholders":
        with st.form("tpl_image_form"):
            img = st.file_uploader("Image (PNG, JPEG or GIF)", type=["png", "jpg", "jpeg", "gif"], key="tpl_image")
            reason = st.text_input("Reason", key="tpl_image_reason")
            if st.form_submit_button("Check and store"):
                if img is None:
                    st.error("Choose an image first.")
                else:
                    with handled():
                        ref = svc.add_image(ctx.principal, tenant, img.name, img.getvalue(), reason)
                        st.success(f"Stored. Use this as the static value of an image placeholder: `{ref}`")
        with handled():
            refs = svc.images(ctx.principal, tenant)
            if refs:
                st.markdown("**Images of this tenant**")
                st.code("\n".join(refs), language=None)
    elif source == "Link a Google file":
        with st.form("tpl_google_form"):
            file_id = st.text_input("Google file id (from the file's URL)", key="tpl_google_id")
            name = st.text_input("Name in the library", key="tpl_google_name")
            reason = st.text_input("Reason", key="tpl_google_reason")
            if st.form_submit_button("Scan and link"):
                with handled():
                    doc = svc.link_google(ctx.principal, tenant, file_id, reason, name=name or None)
                    st.session_state[FLASH] = f"Linked {doc['name']} with {len(doc['versions'][0]['placeholders'])} " \
                                              "placeholders."
                    st.query_params["template"] = doc["id"]
                    st.rerun()
    else:
        filename, data = None, None
        if source == "Upload a file":
            up = st.file_uploader("Template (.docx or .pptx)", type=["docx", "pptx", "docm", "pptm"],
                                  key="tpl_file")
            if up is not None:
                filename, data = up.name, up.getvalue()
        else:
            sample = st.selectbox("Sample", ["proposal.docx", "qbr.pptx"], key="tpl_sample")
            filename, data = sample, (SAMPLES / sample).read_bytes()
        if st.button("Run preflight", key="tpl_preflight", disabled=data is None, type="primary"):
            with handled():
                report = svc.check_upload(ctx.principal, tenant, filename or "", data or b"")
                st.session_state[PENDING] = {"filename": filename, "data": data, "report": report.to_dict()}
        pending = st.session_state.get(PENDING)
        if pending:
            preflight_report(pending["report"], key="tpl_report")
            if pending["report"]["accepted"]:
                with st.form("tpl_accept_form"):
                    st.markdown("**Accept into the library**")
                    name = st.text_input("Name", value=pending["filename"].rsplit(".", 1)[0], key="tpl_new_name")
                    as_version = st.checkbox(
                        f"Add as a new version of {selected['name']}" if selected else "Add as a new version",
                        value=False, key="tpl_as_version", disabled=selected is None)
                    reason = st.text_input("Reason", key="tpl_accept_reason")
                    if st.form_submit_button("Accept and add"):
                        with handled():
                            doc = svc.add_version(ctx.principal, tenant, pending["filename"], pending["data"], reason,
                                                  name=name or None,
                                                  template_id=selected["id"] if as_version and selected else None)
                            st.session_state.pop(PENDING, None)
                            st.session_state[FLASH] = f"Added {doc['name']} version {doc['currentVersion']}."
                            st.query_params["template"] = doc["id"]
                            st.rerun()

# placeholder configuration ---------------------------------------------------------------------------------------
with tab_cfg:
    if not selected:
        st.info("Pick or add a template first.")
    else:
        tid = selected["id"]
        uses = selected["versions"][-1]["uses"]
        names = selected["versions"][-1]["placeholders"]
        config = selected.get("config", {}).get("placeholders", {})
        st.caption("Each placeholder gets a type, a source (a static value, a CRM field such as opportunity.amount, "
                   "or an LLM prompt from the prompt catalog) and a fallback used when the source has no value. "
                   "Advanced settings (JSON): number_format, date_format, allowed_values, currency, max_items, "
                   "columns/headers for tables, category_field/value_fields/aggregate for charts, variables for "
                   "prompts.")
        if not selected.get("configured"):
            st.warning("Not every placeholder is configured yet; generation is refused until it is.")
        with st.form(f"tpl_config_form_{tid}"):
            collected: dict[str, dict[str, Any]] = {}
            for i, name in enumerate(names):
                f = simple_fields(config.get(name) or {"name": name, "source": {"kind": "static"}})
                where = "; ".join(u["location"] for u in uses if u["name"] == name)[:300]
                st.markdown(f"**`{{{{ {name} }}}}`** · {where}")
                c1, c2, c3 = st.columns([1, 1, 2])
                ftype = c1.selectbox("Type", TYPES, index=TYPES.index(f["type"]), key=f"cfg_{tid}_{i}_type")
                labels = [SOURCE_LABELS[k] for k in SOURCES]
                src_label = c2.selectbox("Source", labels, index=SOURCES.index(f["source"]), key=f"cfg_{tid}_{i}_src")
                src = SOURCES[labels.index(src_label)]
                value = c3.text_area("Static value / CRM field path / prompt id", value=f["value"], height=68,
                                     key=f"cfg_{tid}_{i}_val")
                c4, c5, c6 = st.columns([2, 1, 1])
                fallback = c4.text_input("Fallback", value=f["fallback"], key=f"cfg_{tid}_{i}_fb")
                required = c5.checkbox("Required", value=f["required"], key=f"cfg_{tid}_{i}_req")
                max_length = c6.number_input("Max length (0 = none)", min_value=0, max_value=100_000,
                                             value=f["max_length"], key=f"cfg_{tid}_{i}_max")
                advanced = st.text_area("Advanced settings (JSON)", value=f["advanced"], height=68,
                                        key=f"cfg_{tid}_{i}_adv")
                collected[name] = {"type": ftype, "source": src, "value": value, "fallback": fallback,
                                   "required": required, "max_length": max_length, "advanced": advanced}
            object_type = st.selectbox("Generate one document per", ["opportunity", "account"],
                                       index=["opportunity", "account"].index(selected.get("objectType",
                                                                                           "opportunity")),
                                       key=f"cfg_{tid}_object")
            reason = st.text_input("Reason for the change", key=f"cfg_{tid}_reason")
            if st.form_submit_button("Save configuration", type="primary"):
                try:
                    new = {"placeholders": {n: from_simple(n, v) for n, v in collected.items()}}
                except ValueError as e:
                    st.error(str(e))
                else:
                    with handled():
                        svc.configure(ctx.principal, tenant, tid, new, reason, object_type=object_type)
                        st.session_state[FLASH] = f"Saved the configuration of {selected['name']}."
                        st.rerun()
        with st.expander("Edit the whole configuration as JSON"):
            with st.form(f"tpl_json_form_{tid}"):
                text = st.text_area("Configuration", value=json.dumps(selected.get("config", {}), indent=2),
                                    height=300, key=f"cfg_{tid}_json")
                reason = st.text_input("Reason", key=f"cfg_{tid}_json_reason")
                if st.form_submit_button("Save JSON"):
                    try:
                        parsed = json.loads(text)
                    except json.JSONDecodeError as e:
                        st.error(f"Not valid JSON: {e.msg} (line {e.lineno})")
                    else:
                        with handled():
                            svc.configure(ctx.principal, tenant, tid, parsed, reason)
                            st.session_state[FLASH] = "Saved the configuration."
                            st.rerun()


def record_options(object_type: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with handled():
        for r in svc.records(ctx.principal, tenant, object_type, limit=300):
            out[r["id"]] = f"{(r.get('data') or {}).get('name') or r.get('sourceId')} ({r.get('sourceId')})"
    return out


# preview ---------------------------------------------------------------------------------------------------------
with tab_prev:
    if not selected:
        st.info("Pick or add a template first.")
    elif selected["kind"] not in {"docx", "pptx"}:
        url = selected["versions"][-1].get("url")
        st.info(f"Google files are previewed in Google: [open the template]({url}).")
    else:
        options = {"": "Sample data (no CRM record)", **record_options(selected.get("objectType", "opportunity"))}
        record = pick("Fill with", options, key="tpl_preview_record")
        if st.button("Render preview", key="tpl_preview_btn", type="primary"):
            with st.spinner("LibreOffice rendering…"), handled():
                st.session_state.setdefault(PREVIEW, {})[selected["id"]] = svc.preview(
                    ctx.principal, tenant, selected["id"], record_id=record or None)
        result = st.session_state.get(PREVIEW, {}).get(selected["id"])
        if result is not None:
            st.info(f"{result.preview.label}. Filled with {result.record_label}; took {result.preview.seconds:.1f} s.",
                    icon=":material/preview:")
            c1, c2 = st.columns(2)
            c1.download_button("Download document", result.document, file_name=result.filename,
                               key="tpl_preview_doc", icon=":material/download:")
            c2.download_button("Download PDF", result.preview.pdf, file_name=result.filename.rsplit(".", 1)[0] + ".pdf",
                               mime="application/pdf", key="tpl_preview_pdf", icon=":material/picture_as_pdf:")
            pages = len(result.preview.pages)
            page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1,
                                   key="tpl_preview_page") if pages > 1 else 1
            st.image(result.preview.pages[int(page) - 1], caption=f"Page {page} · LibreOffice rendering")
            with st.expander("Where each value came from"):
                st.dataframe(pd.DataFrame(provenance_rows(result.provenance)), hide_index=True, width="stretch",
                             key="tpl_preview_prov")

# generate --------------------------------------------------------------------------------------------------------
with tab_gen:
    if not selected:
        st.info("Pick or add a template first.")
    else:
        object_type = selected.get("objectType", "opportunity")
        options = record_options(object_type)
        datas = []
        with handled():
            datas = [r.get("data") or {} for r in svc.records(ctx.principal, tenant, object_type, limit=2000)]
        stages = sorted({str(d["stage"]) for d in datas if d.get("stage")})
        regions = sorted({str(d["region"]) for d in datas if d.get("region")})
        with st.form("tpl_generate_form"):
            mode = st.radio("Generate", ["One document", "A batch, one per matching record"], key="tpl_gen_mode")
            one = pick(f"Record ({object_type})", options, key="tpl_gen_record")
            c1, c2, c3, c4 = st.columns(4)
            pick_stages = c1.multiselect("Stage", stages, key="tpl_gen_stage")
            pick_regions = c2.multiselect("Region", regions, key="tpl_gen_region")
            min_amount = c3.number_input("Minimum amount", min_value=0.0, value=0.0, step=1000.0, key="tpl_gen_min")
            limit = c4.number_input("At most", min_value=1, max_value=1000, value=50, key="tpl_gen_limit")
            reason = st.text_input("Reason", key="tpl_gen_reason")
            if st.form_submit_button("Queue generation", type="primary"):
                try:
                    if mode == "One document":
                        job = svc.start_generation(ctx.principal, tenant, selected["id"], reason,
                                                   record_ids=[one] if one else [])
                    else:
                        conds: list[dict[str, Any]] = []
                        if pick_stages:
                            conds.append({"field": "stage", "op": "in", "value": pick_stages})
                        if pick_regions:
                            conds.append({"field": "region", "op": "in", "value": pick_regions})
                        if min_amount:
                            conds.append({"field": "amount", "op": ">=", "value": float(min_amount)})
                        flt = RecordFilter(object_type=object_type, conditions=conds, limit=int(limit))
                        job = svc.start_generation(ctx.principal, tenant, selected["id"], reason, record_filter=flt)
                    st.success(f"Queued job {job['id']} for {job['total']} document(s); the worker runs it.")
                except Exception as e:  # noqa: BLE001 - shown as a message (quota refusals carry the numbers)
                    show_error(e)

        @st.fragment(run_every=3)
        def jobs_panel() -> None:
            with handled():
                jobs = svc.jobs(ctx.principal, tenant, selected["id"], limit=20)
                if not jobs:
                    st.info("No generation jobs for this template yet.")
                    return
                for j in jobs:
                    if j["status"] in {"queued", "running"}:
                        st.progress(float(j.get("progress") or 0.0),
                                    text=f"{j['id']} · {j['status']} · {j.get('done', 0)} of {j['total']} documents")
                st.dataframe(pd.DataFrame([{
                    "job": j["id"], "status": j["status"], "documents": j["total"], "succeeded": j.get("succeeded"),
                    "failed": j.get("failed"), "created": j["createdAt"][:16], "by": j.get("createdBy"),
                    "reason": j.get("reason"), "error": j.get("error")} for j in jobs]),
                    hide_index=True, width="stretch", key="tpl_jobs_table")

        st.subheader("Jobs")
        jobs_panel()

# outputs ---------------------------------------------------------------------------------------------------------
with tab_out:
    if not selected:
        st.info("Pick or add a template first.")
    else:
        jobs: list[dict[str, Any]] = []
        with handled():
            jobs = [j for j in svc.jobs(ctx.principal, tenant, selected["id"], limit=50) if j["status"] != "refused"]
        if not jobs:
            st.info("Nothing generated yet.")
        else:
            job_id = pick("Job", {j["id"]: f"{j['createdAt'][:19]} · {j['status']} · {j['total']} docs · {j['id']}"
                                  for j in jobs}, key="tpl_out_job") or jobs[0]["id"]
            docs: list[dict[str, Any]] = []
            with handled():
                docs = svc.outputs(ctx.principal, tenant, job_id)
            st.dataframe(pd.DataFrame([{"record": d.get("recordLabel"), "status": d["status"],
                                        "version": d.get("version"), "file": d.get("filename") or d.get("url"),
                                        "reasons": "; ".join(d.get("errors") or []), "id": d["id"]} for d in docs]),
                         hide_index=True, width="stretch", key="tpl_out_table")
            done = [d for d in docs if d["status"] == "succeeded"]
            if done:
                doc_id = pick("Document", {d["id"]: f"{d['recordLabel']} · {d['id'][-6:]}" for d in done},
                              key="tpl_out_doc") or done[0]["id"]
                doc = next(d for d in done if d["id"] == doc_id)
                if doc.get("url"):
                    st.link_button("Open in Google", doc["url"], icon=":material/open_in_new:")
                else:
                    def fetch(doc_id: str = doc_id) -> bytes:
                        return svc.download(ctx.principal, tenant, doc_id)[1]

                    st.download_button(f"Download {doc['filename']}", fetch, file_name=doc["filename"],
                                       key="tpl_out_dl", icon=":material/download:")
                    if ctx.services.blobs.backend != "local" and st.button("Create a download link (15 minutes)",
                                                                          key="tpl_out_link"):
                        with handled():
                            _, _, url = svc.download(ctx.principal, tenant, doc_id)
                            if url:
                                st.link_button("Open the download link", url, icon=":material/link:")
                                st.caption("The link is signed and expires in 15 minutes; share it only with "
                                           "people who may see this customer's data.")
                st.markdown("**Provenance**")
                st.dataframe(pd.DataFrame(provenance_rows(doc.get("provenance") or {})), hide_index=True,
                             width="stretch", key="tpl_out_prov")
                with st.form("tpl_regen_form"):
                    field = st.selectbox("Re-generate one field", sorted((doc.get("provenance") or {}).keys()),
                                         key="tpl_regen_field")
                    reason = st.text_input("Reason", key="tpl_regen_reason")
                    if st.form_submit_button("Re-generate field"):
                        with handled():
                            new = svc.regenerate_field(ctx.principal, tenant, doc_id, field, reason)
                            st.session_state[FLASH] = f"Re-generated {field}: the document is now version " \
                                                      f"{new['version']}."
                            st.rerun()
