"""The guardian's prompt formats and special tokens: the one definition training, export and tests share.

Gemma 3's vocabulary has 6,242 free `<unusedN>` tokens; we give 14 of them a meaning instead of growing the
embedding. The exported tokenizer renames them (`<unused0>` -> `<|pred|>`, ...) and the manifest lists the ids, which
the Rust runtime reads from there (never from this file).

Formats (ids, not text: the query is encoded with special-token matching switched off, so a user who types
`<|pred|>` or `<end_of_turn>` gets ordinary text pieces, never a control token):
  classify  <bos> query <|pred|>                    -> <|safe|> <eos>   |   <|unsafe|> <|cat_a|> [<|cat_b|> ...] <eos>
  respond   <bos> query <|expl|>                    -> response <end_of_turn>
  force     <bos> query <|force-safety|> <|expl|>   -> careful response <end_of_turn>
The guardian's score is P(<|unsafe|>) / (P(<|safe|>) + P(<|unsafe|>)) at the position after <|pred|>; category
scores are the softmax over the category tokens at the position after <|unsafe|> (teacher-forced, one extra step).
"""

CATEGORIES = ["hate", "harassment", "violence", "sexual", "sexual_minors", "self_harm", "crime", "privacy",
              "prompt_attack"]

# Gemma 3 ids (base tokenizer); <unusedN> has id N + 6.
BOS, EOS, END_OF_TURN, PAD = 2, 1, 106, 0
SPECIALS = {
    "<|pred|>": 6,
    "<|expl|>": 7,
    "<|force-safety|>": 8,
    "<|safe|>": 9,
    "<|unsafe|>": 10,
    **{f"<|cat_{c}|>": 11 + i for i, c in enumerate(CATEGORIES)},
}
PRED, EXPL, FORCE = SPECIALS["<|pred|>"], SPECIALS["<|expl|>"], SPECIALS["<|force-safety|>"]
SAFE, UNSAFE = SPECIALS["<|safe|>"], SPECIALS["<|unsafe|>"]
CAT_IDS = [SPECIALS[f"<|cat_{c}|>"] for c in CATEGORIES]


def classify_prompt(query_ids):
    return [BOS, *query_ids, PRED]


def classify_target(unsafe, categories):
    if not unsafe:
        return [SAFE, EOS]
    cats = [SPECIALS[f"<|cat_{c}|>"] for c in categories if c in CATEGORIES]
    return [UNSAFE, *cats, EOS]


def respond_prompt(query_ids, force_safety=False):
    return [BOS, *query_ids, *([FORCE] if force_safety else []), EXPL]


def respond_target(response_ids):
    return [*response_ids, END_OF_TURN]
