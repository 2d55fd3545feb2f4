"""Render a sample of every contract template into docs/contracts/: the first page of each
order type in each language as PNG, from the example orders in docs/examples/.

The date, the seller and the numbers are fixed, so the samples come out the same on every
run (with the same Typst and fonts). The PDFs are written too when every one of them is
small enough to keep in the repository.

    uv run python services/contracts/scripts/render_samples.py [--templates DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from contracts import domain
from contracts.adapters.documents import PACKAGED_TEMPLATES, TypstRenderer
from orderflow.messages import (
    Annotation,
    AttachmentKind,
    AttachmentRef,
    Decision,
    DepartmentFeedback,
    OrderApproved,
    OrderDocument,
    Reviewer,
    Severity,
    Totals,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples"
OUT = ROOT / "docs" / "contracts"
#: PDFs above this size are not kept in the repository
PDF_LIMIT = 200 * 1024

TIMEZONE = ZoneInfo("Asia/Shanghai")
DRAFTED_AT = datetime(2026, 12, 1, 9, 30, tzinfo=TIMEZONE)
SELLER = domain.Party(
    name="苏州恒达机械制造有限公司",
    address="江苏省苏州工业园区星湖街 328 号",
    contact="赵敏",
    phone="+86 512 6666 0000",
    email="sales@hengda.example.cn",
    tax_id="91320594MA1W2X3Y4K",
    bank_name="中国工商银行苏州工业园区支行",
    bank_account_name="苏州恒达机械制造有限公司",
    bank_account="1102 0203 0900 0012 345",
)


def _attachment(name: str, kind: AttachmentKind, size: int, sha256: str) -> AttachmentRef:
    ref = uuid.uuid5(uuid.NAMESPACE_URL, f"orderflow-sample/{name}")
    return AttachmentRef(
        id=ref,
        name=name,
        kind=kind,
        content_type="application/pdf",
        size=size,
        sha256=sha256,
        download_path=f"/api/v1/attachments/{ref}",
    )


DRAWING = _attachment(
    "FL-50-16 法兰加工图 rev.B.pdf",
    AttachmentKind.DRAWING,
    482_113,
    "9f2c4e1a7b3d5e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f80",
)
SPEC = _attachment(
    "密封面技术要求.pdf",
    AttachmentKind.REQUIREMENTS_SPEC,
    96_480,
    "3c5e7a9b1d2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c",
)
TECHNICAL = DepartmentFeedback(
    department="technical",
    decision=Decision.APPROVE,
    reviewer=Reviewer(id="liu.yang", name="刘洋"),
    comment="密封面加工工艺可行，按附件图纸 rev.B 执行。",
    annotations=[
        Annotation(
            field="/technical_requirements",
            message="粗糙度 Ra1.6 需精车后研磨，已计入单价",
            severity=Severity.INFO,
        ),
        Annotation(
            field="/lines/0/specification",
            message="法兰厚度按 20 mm 加工，螺栓孔 4-Φ18",
            severity=Severity.MINOR,
        ),
    ],
)


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"order-{name}.json").read_text("utf-8"))
    return data


def approval(order_type: str, language: str) -> OrderApproved:
    """The example order of that type as approved, its customer speaking `language`."""
    document = _example("service" if order_type == "service" else "product")
    document["order_type"] = order_type
    document["customer"]["language"] = language
    order = OrderDocument.model_validate(document)
    feedback = [
        DepartmentFeedback(
            department=d, decision=Decision.APPROVE, reviewer=Reviewer(id=f"{d}.lead")
        )
        for d in ("supervisor", "production", "finance")
    ]
    attachments: list[AttachmentRef] = []
    if order_type == "custom":
        feedback.append(TECHNICAL)
        attachments = [DRAWING, SPEC]
    elif order_type == "product":
        attachments = [DRAWING]
    return OrderApproved(
        order_id=uuid.uuid5(uuid.NAMESPACE_URL, f"orderflow-sample/{order_type}/{language}"),
        revision=1,
        order=order,
        totals=Totals.of(order),
        approvals=feedback,
        approved_at=DRAFTED_AT,
        attachments=attachments,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--resolution", type=int, default=60, help="PNG pixels per inch")
    parser.add_argument(
        "--templates", type=Path, default=PACKAGED_TEMPLATES, help="an edited copy of them"
    )
    parser.add_argument(
        "--keep-pdf", action="store_true", help="write the PDFs whatever their size"
    )
    args = parser.parse_args()
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        print("pdftoppm not found: install poppler-utils", file=sys.stderr)
        return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    renderer = TypstRenderer(template_dir=args.templates, timezone=TIMEZONE)
    renderer.check()
    pdfs: dict[str, bytes] = {}
    for seq, (order_type, language) in enumerate(
        ((t, lang) for t in ("product", "service", "custom") for lang in ("zh", "en")), start=101
    ):
        content = domain.draft(
            approval(order_type, language),
            number=domain.format_number(domain.DEFAULT_NUMBER_PATTERN, year=2026, seq=seq),
            seller=SELLER,
            drafted_at=DRAFTED_AT,
        )
        started = time.perf_counter()
        pdf = renderer.render_sync(content)
        seconds = time.perf_counter() - started
        name = f"{order_type}-{language}"
        pdfs[name] = pdf
        png = out / f"{name}.png"
        page_one = ["-png", "-r", str(args.resolution), "-f", "1", "-l", "1", "-singlefile"]
        subprocess.run(  # noqa: S603
            [pdftoppm, *page_one, "-", str(png.with_suffix(""))], input=pdf, check=True
        )
        print(f"{png.relative_to(out.parent)}: {len(pdf) / 1024:.0f} KB PDF in {seconds:.3f}s")
    keep = args.keep_pdf or all(len(pdf) <= PDF_LIMIT for pdf in pdfs.values())
    for name, pdf in pdfs.items():
        path = out / f"{name}.pdf"
        if keep:
            path.write_bytes(pdf)
        else:
            path.unlink(missing_ok=True)
    if not keep:
        print(f"PDFs not kept: one or more is over {PDF_LIMIT // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
