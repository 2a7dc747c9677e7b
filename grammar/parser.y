/* parser.y — the grammar of .dhx, building the AST of ast.h.
 *
 * A pure (reentrant) Bison parser with locations, fed by the Flex scanner of lexer.l. Newlines
 * are not tokens: items and statements need no separators because an expression can never be
 * followed by an identifier or a keyword. The same grammar parses whole files and single
 * expressions (--set values): the lexer hands over START_FILE or START_EXPR first.
 *
 * Error recovery works at three levels, item, statement and field, each with an `error`
 * alternative: the parser reports the first bad token, skips to the start of the next item,
 * statement or field, and goes on, so several mistakes in a file are reported in one run.
 * Follow-on errors stay quiet: Bison's three-token rule until a whole item, statement, field
 * or block has parsed again (then yyerrok), no complaint about the token right after input
 * the lexer already reported and dropped, and a body that runs into the next item is one
 * "missing '}'" error. LAC makes the "expecting" part of each message exact.
 *
 * Everything is bounded: the lexer refuses more than DHX_MAX_NESTING open brackets, every
 * expression node passes dhx_finish_expr (depth <= DHX_MAX_EXPR_DEPTH), and Bison's own stack
 * limit (YYMAXDEPTH), reachable with thousands of unary minuses, is reported as nesting too
 * deep rather than "memory exhausted".
 */
%code requires {
#include "internal.h"
typedef void *yyscan_t;
}

%code provides {
#define YYSTYPE DHX_YYSTYPE
#define YYLTYPE DHX_YYLTYPE
}

%code {
#include <stdio.h>
#include <string.h>

#include "lexer.h"

static void dhx_yyerror(YYLTYPE *loc, yyscan_t scanner, dhx_parse_state *ps, const char *msg);

#define A (ps->arena)
#define NEW(T) ((T *)dhx_arena_alloc(A, sizeof(T)))
#define PUSH(list, item) dhx_list_push(A, &(list), &(item), sizeof(item))

static dhx_expr *leaf(dhx_parse_state *ps, dhx_expr_kind kind, dhx_loc loc);
static dhx_expr *binop(dhx_parse_state *ps, char op, dhx_expr *l, dhx_expr *r, dhx_loc loc);
static dhx_expr *with_args(dhx_parse_state *ps, dhx_expr_kind kind, char *name, dhx_list args,
                           dhx_loc loc);
static dhx_item *new_item(dhx_parse_state *ps, dhx_item_kind kind, dhx_loc loc, char *name,
                          dhx_loc name_loc);
static dhx_item *definition(dhx_parse_state *ps, dhx_item_kind kind, dhx_loc loc, char *name,
                            dhx_loc name_loc, dhx_list params, dhx_list body);
static dhx_item *block_item(dhx_parse_state *ps, dhx_item_kind kind, dhx_loc loc, dhx_loc kw,
                            dhx_fields *fields);
static dhx_fields *fields_of(dhx_parse_state *ps, dhx_list list, dhx_loc loc);
static dhx_stmt *new_stmt(dhx_parse_state *ps, dhx_stmt_kind kind, dhx_loc loc);
static void missing_brace(dhx_parse_state *ps, const dhx_loc *open, const dhx_loc *body,
                          int lookahead);
}

%define api.pure full
%define api.prefix {dhx_yy}
%define api.location.type {dhx_loc}
%define parse.error custom
%define parse.lac full
%locations
%expect 0
%param {yyscan_t scanner}
%parse-param {dhx_parse_state *ps}

/* Spans: from the first symbol's start to the last one's end; an empty rule is a zero-width
   span where the previous symbol ended. */
%code requires {
#define YYLLOC_DEFAULT(Cur, Rhs, N)                               \
  do {                                                            \
    if (N) {                                                      \
      (Cur) = YYRHSLOC(Rhs, 1);                                   \
      (Cur).end_line = YYRHSLOC(Rhs, N).end_line;                 \
      (Cur).end_col = YYRHSLOC(Rhs, N).end_col;                   \
    } else {                                                      \
      (Cur) = YYRHSLOC(Rhs, 0);                                   \
      (Cur).line = (Cur).end_line;                                \
      (Cur).col = (Cur).end_col;                                  \
    }                                                             \
  } while (0)
}

%initial-action { @$ = ps->start; }

%union {
  char *str;
  dhx_expr *expr;
  dhx_stmt *stmt;
  dhx_item *item;
  dhx_fields *fields;
  dhx_list list;
  dhx_arg arg;
  dhx_param param;
  dhx_field field;
}

%token START_FILE START_EXPR
%token <str> NAME "identifier"
%token <str> STRING "string"
%token <expr> NUMBER "number"
%token <str> USE "'use'" LAYER "'layer'" MODEL "'model'" DATA "'data'" CLUSTER "'cluster'" GPU "'gpu'"
%token <str> SCHEDULE "'schedule'" TRAIN "'train'" REPEAT "'repeat'" IN "'in'" RETURN "'return'"
%token <str> TRUE_ "'true'" FALSE_ "'false'" ON "'on'" OFF "'off'"
%token <str> INT_T "'int'" FLOAT_T "'float'" BOOL_T "'bool'" STR_T "'str'"

/* During error recovery inside a body, an `error` token continues the body rather than
   ending it for lack of a '}'. */
%precedence MISSING_BRACE
%precedence error
%left '+' '-'
%left '*' '/' '%'
%precedence NEG

%type <item> item
%type <list> stmts body block params_opt param_list dims args_opt arg_list
%type <list> fields field_seq expr_list
%type <stmt> stmt
%type <param> param type
%type <fields> field_block
%type <field> field
%type <arg> arg
%type <expr> expr postfix primary call
%type <str> label

%%

top:
    START_FILE items
  | START_EXPR expr           { ps->expr = $2; }
  ;

items:
    %empty
  | items item                {
                                if ($2) {
                                  PUSH(ps->items, $2);
                                  yyerrok;  /* a whole item after an error: in sync again */
                                }
                              }
  ;

item:
    USE NAME                  { $$ = new_item(ps, ITEM_USE, @$, $2, @2); }
  | USE STRING                { $$ = new_item(ps, ITEM_USE, @$, $2, @2); $$->use_path = true; }
  | LAYER NAME '(' params_opt ')' body
                              { $$ = definition(ps, ITEM_LAYER, @$, $2, @2, $4, $6); }
  | MODEL NAME '(' params_opt ')' body
                              { $$ = definition(ps, ITEM_MODEL_DEF, @$, $2, @2, $4, $6); }
  | MODEL NAME '=' call       {
                                $$ = new_item(ps, ITEM_MODEL_INST, @$, $2, @2);
                                $$->value = $4;
                              }
  | DATA field_block          { $$ = block_item(ps, ITEM_DATA, @$, @1, $2); }
  | CLUSTER '=' call          {
                                $$ = new_item(ps, ITEM_CLUSTER, @$, NULL, @1);
                                $$->value = $3;
                              }
  | CLUSTER '=' NAME          {
                                $$ = new_item(ps, ITEM_CLUSTER, @$, NULL, @1);
                                $$->value = leaf(ps, EXPR_IDENT, @3);
                                $$->value->str = $3;
                              }
  | CLUSTER NAME '=' call     {
                                $$ = new_item(ps, ITEM_CLUSTER_DEF, @$, $2, @2);
                                $$->value = $4;
                              }
  | GPU NAME field_block      {
                                $$ = new_item(ps, ITEM_GPU, @$, $2, @2);
                                $$->fields = $3;
                              }
  | SCHEDULE field_block      { $$ = block_item(ps, ITEM_SCHEDULE, @$, @1, $2); }
  | TRAIN field_block         { $$ = block_item(ps, ITEM_TRAIN, @$, @1, $2); }
  | error                     { $$ = NULL; }
  ;

/* ---- layer and model bodies ---- */

/* A body that meets the next item (or the end of the file) before its '}' is missing the
   brace: the most common slip, reported as such instead of as a stray keyword. Only item
   keywords and the end of the file can end a body, so this costs no conflict. */
body:
    '{' stmts '}'             { $$ = $2; yyerrok; }
  | '{' stmts %prec MISSING_BRACE
                              {
                                $$ = $2;
                                missing_brace(ps, &@1, &@$, yychar);
                              }
  ;

block:
    '{' stmts '}'             { $$ = $2; yyerrok; }
  ;

stmts:
    %empty                    { $$ = (dhx_list){0}; }
  | stmts stmt                { $$ = $1; if ($2) { PUSH($$, $2); yyerrok; } }
  ;

stmt:
    NAME '=' expr             {
                                $$ = new_stmt(ps, STMT_ASSIGN, @$);
                                $$->name = $1;
                                $$->name_loc = @1;
                                $$->value = $3;
                              }
  | RETURN expr               { $$ = new_stmt(ps, STMT_RETURN, @$); $$->value = $2; }
  | REPEAT expr block         {
                                $$ = new_stmt(ps, STMT_REPEAT, @$);
                                $$->value = $2;
                                $$->body = $3.items;
                                $$->nbody = $3.n;
                              }
  | REPEAT NAME IN expr block {
                                $$ = new_stmt(ps, STMT_REPEAT, @$);
                                $$->name = $2;
                                $$->name_loc = @2;
                                $$->value = $4;
                                $$->body = $5.items;
                                $$->nbody = $5.n;
                              }
  | error                     { $$ = NULL; }
  ;

/* ---- parameters and types ---- */

params_opt:
    %empty                    { $$ = (dhx_list){0}; }
  | param_list
  | param_list ','
  ;

param_list:
    param                     { $$ = (dhx_list){0}; PUSH($$, $1); }
  | param_list ',' param      { $$ = $1; PUSH($$, $3); }
  ;

param:
    NAME ':' type             { $$ = $3; $$.name = $1; $$.loc = @$; }
  | NAME ':' type '=' expr    { $$ = $3; $$.name = $1; $$.loc = @$; $$.default_value = $5; }
  ;

type:
    INT_T                     { $$ = (dhx_param){.type = TYPE_INT}; }
  | FLOAT_T                   { $$ = (dhx_param){.type = TYPE_FLOAT}; }
  | BOOL_T                    { $$ = (dhx_param){.type = TYPE_BOOL}; }
  | STR_T                     { $$ = (dhx_param){.type = TYPE_STR}; }
  | '[' dims ']'              { $$ = (dhx_param){.type = TYPE_TENSOR, .dims = $2.items, .ndims = $2.n}; }
  | '[' dims ']' NAME         {
                                $$ = (dhx_param){.type = TYPE_TENSOR, .dims = $2.items, .ndims = $2.n,
                                                 .dtype = $4};
                              }
  ;

dims:
    expr                      { $$ = (dhx_list){0}; PUSH($$, $1); }
  | dims ',' expr             { $$ = $1; PUSH($$, $3); }
  ;

/* ---- field blocks: data, schedule, train and their sub-blocks ---- */

field_block:
    '{' fields '}'            { $$ = fields_of(ps, $2, @$); yyerrok; }
  ;

fields:
    %empty                    { $$ = (dhx_list){0}; }
  | field_seq
  | field_seq ','
  ;

field_seq:
    field                     { $$ = (dhx_list){0}; if ($1.name) PUSH($$, $1); }
  | field_seq field           { $$ = $1; if ($2.name) PUSH($$, $2); }
  | field_seq ',' field       { $$ = $1; if ($3.name) PUSH($$, $3); }
  ;

field:
    label ':' expr            { $$ = (dhx_field){.name = $1, .loc = @1, .value = $3}; }
  | label field_block         { $$ = (dhx_field){.name = $1, .loc = @1, .block = $2}; }
  | error                     { $$ = (dhx_field){0}; }
  ;

/* Field and argument names may be keywords: `data { train: "a.bin" }`. */
label:
    NAME
  | USE | LAYER | MODEL | DATA | CLUSTER | GPU | SCHEDULE | TRAIN | REPEAT | IN | RETURN
  | TRUE_ | FALSE_ | ON | OFF | INT_T | FLOAT_T | BOOL_T | STR_T
  ;

/* ---- expressions ---- */

expr:
    expr '+' expr             { $$ = binop(ps, '+', $1, $3, @$); }
  | expr '-' expr             { $$ = binop(ps, '-', $1, $3, @$); }
  | expr '*' expr             { $$ = binop(ps, '*', $1, $3, @$); }
  | expr '/' expr             { $$ = binop(ps, '/', $1, $3, @$); }
  | expr '%' expr             { $$ = binop(ps, '%', $1, $3, @$); }
  | '-' expr %prec NEG        {
                                $$ = dhx_new_expr(A, EXPR_NEG, @$);
                                $$->lhs = $2;
                                $$ = dhx_finish_expr(ps, $$);
                              }
  | postfix
  ;

/* `linear(h, 3 * hidden) @split(col)`: an annotation on the expression before it. */
postfix:
    primary
  | postfix '@' NAME          {
                                $$ = dhx_new_expr(A, EXPR_ANNOT, @$);
                                $$->lhs = $1;
                                $$->str = $3;
                                $$ = dhx_finish_expr(ps, $$);
                              }
  | postfix '@' NAME '(' args_opt ')'
                              {
                                $$ = with_args(ps, EXPR_ANNOT, $3, $5, @$);
                                $$->lhs = $1;
                                $$ = dhx_finish_expr(ps, $$);
                              }
  ;

primary:
    NUMBER                    { $$ = $1; }
  | STRING                    { $$ = leaf(ps, EXPR_STR, @$); $$->str = $1; }
  | TRUE_                     { $$ = leaf(ps, EXPR_BOOL, @$); $$->boolean = true; }
  | FALSE_                    { $$ = leaf(ps, EXPR_BOOL, @$); $$->boolean = false; }
  | ON                        { $$ = leaf(ps, EXPR_BOOL, @$); $$->boolean = true; }
  | OFF                       { $$ = leaf(ps, EXPR_BOOL, @$); $$->boolean = false; }
  | NAME                      { $$ = leaf(ps, EXPR_IDENT, @$); $$->str = $1; }
  | call
  | '(' expr ')'              { $$ = $2; }
  | '(' expr ',' ')'          {
                                dhx_list l = {0};
                                dhx_arg a = {.name_loc = @2, .value = $2};
                                PUSH(l, a);
                                $$ = with_args(ps, EXPR_TUPLE, NULL, l, @$);
                              }
  | '(' expr ',' expr_list ')'
                              {
                                dhx_list l = {0};
                                dhx_arg a = {.name_loc = @2, .value = $2};
                                PUSH(l, a);
                                for (int i = 0; i < $4.n; i++) PUSH(l, ((dhx_arg *)$4.items)[i]);
                                $$ = with_args(ps, EXPR_TUPLE, NULL, l, @$);
                              }
  | '(' expr ',' expr_list ',' ')'
                              {
                                dhx_list l = {0};
                                dhx_arg a = {.name_loc = @2, .value = $2};
                                PUSH(l, a);
                                for (int i = 0; i < $4.n; i++) PUSH(l, ((dhx_arg *)$4.items)[i]);
                                $$ = with_args(ps, EXPR_TUPLE, NULL, l, @$);
                              }
  ;

expr_list:
    expr                      { $$ = (dhx_list){0}; dhx_arg a = {.name_loc = @1, .value = $1}; PUSH($$, a); }
  | expr_list ',' expr        { $$ = $1; dhx_arg a = {.name_loc = @3, .value = $3}; PUSH($$, a); }
  ;

call:
    NAME '(' args_opt ')'     { $$ = with_args(ps, EXPR_CALL, $1, $3, @$); }
  ;

args_opt:
    %empty                    { $$ = (dhx_list){0}; }
  | arg_list
  | arg_list ','
  ;

arg_list:
    arg                       { $$ = (dhx_list){0}; PUSH($$, $1); }
  | arg_list ',' arg          { $$ = $1; PUSH($$, $3); }
  ;

arg:
    label ':' expr            { $$ = (dhx_arg){.name = $1, .name_loc = @1, .value = $3}; }
  | expr                      { $$ = (dhx_arg){.name_loc = @1, .value = $1}; }
  ;

%%

/* ---- node construction ---- */

static dhx_expr *leaf(dhx_parse_state *ps, dhx_expr_kind kind, dhx_loc loc) {
  return dhx_new_expr(A, kind, loc);
}

static dhx_expr *binop(dhx_parse_state *ps, char op, dhx_expr *l, dhx_expr *r, dhx_loc loc) {
  dhx_expr *e = dhx_new_expr(A, EXPR_BINOP, loc);
  e->op = op;
  e->lhs = l;
  e->rhs = r;
  return dhx_finish_expr(ps, e);
}

static dhx_expr *with_args(dhx_parse_state *ps, dhx_expr_kind kind, char *name, dhx_list args,
                           dhx_loc loc) {
  dhx_expr *e = dhx_new_expr(A, kind, loc);
  e->str = name;
  e->args = args.items;
  e->nargs = args.n;
  return dhx_finish_expr(ps, e);
}

static dhx_item *new_item(dhx_parse_state *ps, dhx_item_kind kind, dhx_loc loc, char *name,
                          dhx_loc name_loc) {
  dhx_item *it = NEW(dhx_item);
  it->kind = kind;
  it->loc = loc;
  it->name = name;
  it->name_loc = name_loc;
  return it;
}

static dhx_item *definition(dhx_parse_state *ps, dhx_item_kind kind, dhx_loc loc, char *name,
                            dhx_loc name_loc, dhx_list params, dhx_list body) {
  dhx_item *it = new_item(ps, kind, loc, name, name_loc);
  it->params = params.items;
  it->nparams = params.n;
  it->body = body.items;
  it->nbody = body.n;
  return it;
}

static dhx_item *block_item(dhx_parse_state *ps, dhx_item_kind kind, dhx_loc loc, dhx_loc kw,
                            dhx_fields *fields) {
  dhx_item *it = new_item(ps, kind, loc, NULL, kw);
  it->fields = fields;
  return it;
}

static dhx_fields *fields_of(dhx_parse_state *ps, dhx_list list, dhx_loc loc) {
  dhx_fields *f = NEW(dhx_fields);
  f->loc = loc;
  f->items = list.items;
  f->n = list.n;
  return f;
}

static dhx_stmt *new_stmt(dhx_parse_state *ps, dhx_stmt_kind kind, dhx_loc loc) {
  dhx_stmt *s = NEW(dhx_stmt);
  s->kind = kind;
  s->loc = loc;
  return s;
}

/* ---- syntax errors ---- */

static void missing_brace(dhx_parse_state *ps, const dhx_loc *open, const dhx_loc *body,
                          int lookahead) {
  if (ps->stop) return;
  dhx_loc at = *body;  /* zero-width, just after the last token of the body */
  at.line = at.end_line;
  at.col = at.end_col;
  if (lookahead <= 0)  /* the end of the input */
    dhx_error_at(&at, ps->source, "missing '}' at end of file");
  else
    dhx_error_at(&at, ps->source, "missing '}' before %s", yysymbol_name(YYTRANSLATE(lookahead)));
  dhx_note_at(open, ps->source, "to close the block opened here");
}

/* Token sets that read better as one word in "expecting ...". A group is named when every
   one of its tokens is expected; groups named NULL are dropped silently (operators after a
   complete expression, keywords that could also be field names). Tokens are given by their
   display names so the table does not depend on Bison's numbering. */
static const struct {
  const char *name;
  const char *tokens[24];
} groups[] = {
    {"expression", {"number", "string", "identifier", "'true'", "'false'", "'on'", "'off'", "'('", "'-'"}},
    {"field name", {"identifier", "'use'", "'layer'", "'model'", "'data'", "'cluster'", "'gpu'", "'schedule'",
                    "'train'", "'repeat'", "'in'", "'return'", "'true'", "'false'", "'on'", "'off'", "'int'", "'float'", "'bool'", "'str'"}},
    {"statement", {"identifier", "'return'", "'repeat'"}},
    {"top-level item", {"'use'", "'layer'", "'model'", "'data'", "'cluster'", "'gpu'", "'schedule'", "'train'"}},
    {NULL, {"'+'", "'-'", "'*'", "'/'", "'%'", "'@'"}},
};

#define NGROUPS (int)(sizeof groups / sizeof groups[0])
#define FIELD_GROUP 1
#define STATEMENT_GROUP 2
#define TOP_LEVEL_GROUP 3
#define MAX_LISTED 5

static bool in_group(int g, const char *name) {
  for (int i = 0; i < 24 && groups[g].tokens[i]; i++)
    if (strcmp(groups[g].tokens[i], name) == 0) return true;
  return false;
}

static bool expected_all(int g, const yysymbol_kind_t *exp, int nexp) {
  for (int i = 0; i < 24 && groups[g].tokens[i]; i++) {
    bool found = false;
    for (int j = 0; j < nexp && !found; j++) found = strcmp(yysymbol_name(exp[j]), groups[g].tokens[i]) == 0;
    if (!found) return false;
  }
  return true;
}

/* "unexpected identifier 'foo'", "unexpected '}'", "unexpected end of file" */
static void describe_unexpected(dhx_parse_state *ps, yysymbol_kind_t t, char *buf, size_t n) {
  const char *name = yysymbol_name(t);
  int len = ps->tok_len > 40 ? 40 : ps->tok_len;
  const char *more = ps->tok_len > 40 ? "..." : "";
  if (t == YYSYMBOL_NAME || t == YYSYMBOL_NUMBER)
    snprintf(buf, n, "%s '%.*s%s'", name, len, ps->tok, more);
  else if (t == YYSYMBOL_YYEOF)
    snprintf(buf, n, "%s", ps->expr_mode ? "end of input" : "end of file");
  else if (t == YYSYMBOL_STRING)
    snprintf(buf, n, "string %.*s%s", len, ps->tok, more);
  else
    snprintf(buf, n, "%s", name);
}

static int yyreport_syntax_error(const yypcontext_t *ctx, yyscan_t scanner, dhx_parse_state *ps) {
  (void)scanner;
  if (ps->stop || ps->after_dropped) return 0;
  char unexpected[128] = "";
  describe_unexpected(ps, yypcontext_token(ctx), unexpected, sizeof unexpected);

  yysymbol_kind_t expected[YYNTOKENS];
  int nexp = yypcontext_expected_tokens(ctx, expected, YYNTOKENS);
  if (nexp < 0) nexp = 0;
  bool matched[NGROUPS];
  for (int g = 0; g < NGROUPS; g++) matched[g] = expected_all(g, expected, nexp);

  // In a body the next item or the end of the file would also be accepted (as a missing
  // '}', see `body`), but the brace is what to suggest.
  bool brace = false;
  for (int i = 0; i < nexp; i++) brace |= strcmp(yysymbol_name(expected[i]), "'}'") == 0;
  if (brace && matched[STATEMENT_GROUP] && !matched[FIELD_GROUP]) {
    int k = 0;
    for (int i = 0; i < nexp; i++) {
      const char *name = yysymbol_name(expected[i]);
      bool item_start = expected[i] == YYSYMBOL_YYEOF;
      for (int j = 0; j < 24 && groups[TOP_LEVEL_GROUP].tokens[j]; j++)
        item_start |= strcmp(groups[TOP_LEVEL_GROUP].tokens[j], name) == 0;
      if (!item_start) expected[k++] = expected[i];
    }
    nexp = k;
    for (int g = 0; g < NGROUPS; g++) matched[g] = expected_all(g, expected, nexp);
  }

  // Each group is named once, only if it adds tokens no earlier group covered; "field name"
  // also stays unsaid where an expression may stand (an argument name is an identifier too).
  const char *names[YYNTOKENS + NGROUPS];
  int nnames = 0;
  bool covered[YYNTOKENS] = {0};
  for (int g = 0; g < NGROUPS; g++) {
    if (!matched[g]) continue;
    bool adds = false;
    for (int i = 0; i < nexp; i++)
      if (!covered[i] && in_group(g, yysymbol_name(expected[i]))) adds = covered[i] = true;
    bool quiet = !groups[g].name || (strcmp(groups[g].name, "field name") == 0 && matched[0]);
    if (adds && !quiet) names[nnames++] = groups[g].name;
  }
  for (int i = 0; i < nexp; i++)
    if (!covered[i]) names[nnames++] = yysymbol_name(expected[i]);

  char msg[512];
  int len = snprintf(msg, sizeof msg, "unexpected %s", unexpected);
  if (nnames > 0 && nnames <= MAX_LISTED) {
    len += snprintf(msg + len, sizeof msg - (size_t)len, ", expecting ");
    for (int i = 0; i < nnames; i++)
      len += snprintf(msg + len, sizeof msg - (size_t)len, "%s%s", names[i],
                      i + 2 < nnames ? ", " : i + 1 < nnames ? " or " : "");
  }
  dhx_error_at(yypcontext_location(ctx), ps->source, "%s", msg);
  return 0;
}

/* Only "memory exhausted" comes here: Bison's stack outgrew YYMAXDEPTH. */
static void dhx_yyerror(YYLTYPE *loc, yyscan_t scanner, dhx_parse_state *ps, const char *msg) {
  (void)scanner;
  if (ps->stop) return;
  ps->stop = true;
  if (strcmp(msg, "memory exhausted") == 0)
    dhx_error_at(loc, ps->source, "expression is nested too deeply (more than %d levels)",
                 DHX_MAX_EXPR_DEPTH);
  else
    dhx_error_at(loc, ps->source, "%s", msg);
}

/* ---- entry points ---- */

static void run(dhx_parse_state *ps, const char *text, long len) {
  yyscan_t scanner;
  if (dhx_yylex_init_extra(ps, &scanner) != 0) dhx_out_of_memory();
  YY_BUFFER_STATE buf = dhx_yy_scan_bytes(text, (int)len, scanner);
  dhx_yyparse(scanner, ps);
  dhx_yy_delete_buffer(buf, scanner);
  dhx_yylex_destroy(scanner);
}

static void init_state(dhx_parse_state *ps, dhx_arena *a, const char *file, const char *source,
                       int first_token, int col) {
  memset(ps, 0, sizeof *ps);
  ps->arena = a;
  ps->file = file;
  ps->source = source;
  ps->first_token = first_token;
  ps->expr_mode = first_token == START_EXPR;
  ps->line = 1;
  ps->col = col;
  ps->start = (dhx_loc){file, 1, col, 1, col};
  ps->last_end = ps->start;
}

dhx_module *dhx_parse_buffer(const char *path, const char *source, long len) {
  dhx_module *m = dhx_xmalloc(sizeof *m);
  memset(m, 0, sizeof *m);
  dhx_arena *a = dhx_arena_new();
  m->arena = a;
  m->path = dhx_arena_strdup(a, path);
  m->name = m->path;
  if (len < 0) len = 0;
  m->source = dhx_xmalloc((size_t)len + 1);
  memcpy(m->source, source, (size_t)len);
  m->source[len] = '\0';
  m->source_len = len;
  dhx_register_source_n(m->path, m->source, len);
  if (len > DHX_MAX_FILE_SIZE) {
    dhx_loc at = {m->path, 0, 0, 0, 0};
    dhx_error_at(&at, NULL, "file is larger than %ld MiB", DHX_MAX_FILE_SIZE >> 20);
    return m;
  }

  dhx_parse_state ps;
  init_state(&ps, a, m->path, m->source, START_FILE, 1);
  run(&ps, m->source, len);
  m->items = ps.items.items;
  m->nitems = ps.items.n;
  m->comments = ps.comments.items;
  m->ncomments = ps.comments.n;
  return m;
}

dhx_expr *dhx_parse_expr(dhx_module *m, const char *file, const char *source, long off, long len,
                         int col) {
  dhx_parse_state ps;
  init_state(&ps, m->arena, file, source, START_EXPR, col);
  int errors = dhx_diag.errors;
  run(&ps, source + off, len);
  return dhx_diag.errors == errors ? ps.expr : NULL;
}

void dhx_module_free(dhx_module *m) {
  if (!m) return;
  dhx_unregister_source(m->path);
  free(m->source);
  dhx_arena_free(m->arena);
  free(m);
}
