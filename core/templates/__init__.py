"""Template content generation: preflight, placeholder configuration, Word/PowerPoint rendering, preview.

Layout
------
``ooxml``         safe reading of Office packages, the placeholder grammar, split-run merging
``preflight``     the upload check: size, zip bomb, macros, DOCTYPE/XXE, placeholders and malformed tags
``placeholders``  the per-placeholder configuration (type, source, constraints, fallback), resolution of
                  values from static / CRM / LLM sources, validation and per-field provenance
``images``        hostile-input checks for images (size cap, content type, Pillow verify) and fetching
``charts``        chart values drawn as PNG with matplotlib (Word and Google paths)
``render_docx``   fills a .docx with python-docx
``render_pptx``   fills a .pptx with python-pptx (native, editable charts)
``preview``       LibreOffice headless -> PDF -> PNG pages (pdftoppm)

Nothing here executes template code: placeholders are plain names looked up in a value map.
"""
