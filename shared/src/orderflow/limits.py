"""Every input limit of Orderflow, in one place (documented in docs/integration.md, "Limits").

The message models, the HTTP edges and the bus consumers all take their bounds from here,
so a document refused on one channel is refused on every other, with the same words.
"""

from __future__ import annotations

from decimal import Decimal

# --- amounts and quantities -----------------------------------------------------------------

#: The largest amount a contract can write: capital numerals name groups up to 万亿, so an
#: amount must stay below 10^16 (contracts.domain.MAX_CAPITAL), to the cent. A line's amount
#: and the order's total must not exceed it: the self-check refuses the order otherwise, so
#: no order is approved that contracts cannot draft.
MAX_AMOUNT = Decimal("9999999999999999.99")
#: Unit prices and amounts: digits before and after the point (contracts print cents).
MONEY_DIGITS = 16
MONEY_PLACES = 2
#: Quantities: below a billion units, to a millionth (grams of a tonne).
QUANTITY_DIGITS = 9
QUANTITY_PLACES = 6
#: Tax rates: 0 <= rate < 1, to a hundredth of a percent (0.0650).
RATE_PLACES = 4
#: Subtotals and totals as computed: room for MAX_LINES lines of the largest quantity at the
#: largest price, so computing a total never overflows (the self-check then refuses it).
TOTAL_DIGITS = 28
#: Any other decimal on the bus (stored contract content, for instance).
DECIMAL_DIGITS = 28
DECIMAL_PLACES = 10
#: A decimal as text: longer is refused before it is parsed ("1E-200000000" is short, but
#: its digits are bounded above).
DECIMAL_CHARS = 48

# --- text -------------------------------------------------------------------------------------

#: Names, items, units, ids: one line, no control characters.
SHORT_TEXT = 300
#: Addresses, terms, requirements, notes, comments: tabs and line breaks allowed.
TEXT = 4000
#: Identifiers (salesperson, reviewer, external references, message ids).
ID = 100
#: Phone numbers, units.
PHONE = 50
UNIT = 30
#: A reviewer's display name.
PERSON_NAME = 200
#: An annotation's remark, a reason for a reassignment.
REMARK = 2000
#: JSON pointers in annotations.
POINTER = 300

# --- counts ---------------------------------------------------------------------------------

#: Lines of one order.
MAX_LINES = 500
#: Product parameters (attributes) of one line, and their sizes.
MAX_ATTRIBUTES = 50
ATTRIBUTE_NAME = 100
ATTRIBUTE_VALUE = 1000
#: Annotations of one verdict or annotation message.
MAX_ANNOTATIONS = 200
#: Files named by URL in one `order.submit` command, and the length of each URL (a
#: pre-signed URL of an object store is long).
MAX_COMMAND_ATTACHMENTS = 20
URL = 4000
#: Message ids named in one replay or discard request.
MAX_MESSAGE_IDS = 1000
#: Payment within ten years; review stages of one round.
MAX_SETTLEMENT_DAYS = 3650
MAX_STAGE = 1000

# --- sizes of whole requests and messages ------------------------------------------------------

#: A JSON request body (an order document, a verdict): refused with 413 beyond, before it is
#: read whole. Uploads and imports have their own limits (intake settings).
MAX_JSON_BODY_BYTES = 1 << 20
#: An `order.submit` command on the bus: refused and dead-lettered beyond, before parsing.
MAX_COMMAND_BYTES = MAX_JSON_BODY_BYTES

# --- numbers in paths and queries ----------------------------------------------------------------

#: PostgreSQL `integer`: revision numbers, offsets and counts are stored or compared as one.
MAX_INT4 = 2**31 - 1
#: Revisions of one order.
MAX_REVISION = MAX_INT4
#: How far a listing can page.
MAX_OFFSET = MAX_INT4
