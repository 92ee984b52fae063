"""Reference checks for wizardcoder/resources/seed_tasks.jsonl, keyed by row index, and
:func:`build_dev_task`, which made wizardcoder/resources/dev_tasks.jsonl from them."""

import ast
import textwrap

from wizardcoder.seed.seeds import row_id

CHECKS: dict[int, str] = {
    0: """
assert title_case("the WIND in the willows", ["the", "in"]) == "The Wind in the Willows"
assert title_case("a clash of KINGS", "a of".split()) == "A Clash of Kings"
assert title_case("") == ""
assert title_case("  hello   world ") == "Hello World"
""",
    1: """
assert longest_palindromic_substring("forgeeksskeegfor") == "geeksskeeg"
assert longest_palindromic_substring("abacdfgdcaba") == "aba"
assert longest_palindromic_substring("") == ""
assert longest_palindromic_substring("abc") == "a"
assert longest_palindromic_substring("cbbd") == "bb"
""",
    2: """
assert missing_letters("The quick brown fox jumps over the lazy dog") == ""
assert missing_letters("") == "abcdefghijklmnopqrstuvwxyz"
assert missing_letters("Hello, World!") == "abcfgijkmnpqstuvxyz"
assert missing_letters("ABC xyz 123") == "defghijklmnopqrstuvw"
""",
    3: """
assert run_length_encode("aaabcc") == "a3b1c2"
assert run_length_encode("") == ""
assert run_length_encode("z") == "z1"
assert run_length_encode("aaaaaaaaaaaa") == "a12"
assert run_length_encode("abab") == "a1b1a1b1"
""",
    4: """
assert chunk_list([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
assert chunk_list([], 3) == []
assert chunk_list([1, 2], 5) == [[1, 2]]
try:
    chunk_list([1], 0)
except ValueError:
    pass
else:
    raise AssertionError("expected ValueError")
""",
    5: """
assert flatten_dict({"a": 1, "b": {"c": 2, "d": {"e": 3}}}) == {"a": 1, "b.c": 2, "b.d.e": 3}
assert flatten_dict({}) == {}
assert flatten_dict({"x": {}}) == {}
assert flatten_dict({"x": {"y": [1, 2]}}, sep="/") == {"x/y": [1, 2]}
""",
    6: """
people = [{"name": "Ann", "team": "red"}, {"name": "Bo", "team": "blue"},
          {"name": "Cy", "team": "red"}, {"name": "Di"}]
groups = group_by(people, "team")
assert [p["name"] for p in groups["red"]] == ["Ann", "Cy"]
assert [p["name"] for p in groups["blue"]] == ["Bo"]
assert groups[None] == [{"name": "Di"}]
assert list(groups) == ["red", "blue", None]
assert group_by([], "team") == {}
""",
    7: """
assert invert_dict({"a": 1, "b": 2, "c": 1}) == {1: ["a", "c"], 2: ["b"]}
assert invert_dict({}) == {}
assert invert_dict({"z": 0, "y": 0, "x": 0}) == {0: ["x", "y", "z"]}
""",
    8: """
assert simplify_fraction(6, 8) == (3, 4)
assert simplify_fraction(3, -9) == (-1, 3)
assert simplify_fraction(0, 5) == (0, 1)
assert simplify_fraction(-10, -4) == (5, 2)
try:
    simplify_fraction(1, 0)
except ZeroDivisionError:
    pass
else:
    raise AssertionError("expected ZeroDivisionError")
""",
    9: """
assert goldbach_pair(4) == (2, 2)
assert goldbach_pair(28) == (5, 23)
assert goldbach_pair(100) == (3, 97)
assert goldbach_pair(10000) == (59, 9941)
for bad in (2, 7, -4):
    try:
        goldbach_pair(bad)
    except ValueError:
        pass
    else:
        raise AssertionError(f"expected ValueError for {bad}")
""",
    10: """
assert fraction_to_decimal(1, 6) == "0.1(6)"
assert fraction_to_decimal(1, 2) == "0.5"
assert fraction_to_decimal(4, 2) == "2"
assert fraction_to_decimal(22, 7) == "3.(142857)"
assert fraction_to_decimal(-1, 3) == "-0.(3)"
assert fraction_to_decimal(0, -5) == "0"
""",
    11: """
nums = [4, 5, 6, 7, 0, 1, 2]
assert all(search_rotated(nums, x) == i for i, x in enumerate(nums))
assert search_rotated(nums, 3) == -1
assert search_rotated([], 1) == -1
assert search_rotated([1], 1) == 0
assert search_rotated([3, 1], 1) == 1
assert search_rotated([1, 2, 3], 3) == 2
""",
    12: """
assert intersect_sorted([1, 2, 2, 3, 5], [2, 2, 2, 5, 6]) == [2, 2, 5]
assert intersect_sorted([], [1, 2]) == []
assert intersect_sorted([1, 3], [2, 4]) == []
assert intersect_sorted([7, 7], [7, 7]) == [7, 7]
""",
    13: """
people = [{"name": "bob", "age": 30}, {"name": "Amy", "age": 25}, {"name": "Al", "age": 30}]
assert [p["name"] for p in sort_records(people)] == ["Al", "bob", "Amy"]
assert people[0]["name"] == "bob"
assert sort_records([]) == []
assert sort_records([{"name": "x", "age": 1}]) == [{"name": "x", "age": 1}]
""",
    14: """
assert combination_sum([2, 3, 6, 7], 7) == [[2, 2, 3], [7]]
assert combination_sum([2, 3, 5], 8) == [[2, 2, 2, 2], [2, 3, 3], [3, 5]]
assert combination_sum([2], 1) == []
assert combination_sum([3, 1], 0) == [[]]
assert combination_sum([2, 2], 4) == [[2, 2]]
""",
    15: """
assert generate_parentheses(0) == [""]
assert generate_parentheses(1) == ["()"]
assert generate_parentheses(3) == ["((()))", "(()())", "(())()", "()(())", "()()()"]
assert len(generate_parentheses(6)) == 132
""",
    16: """
assert count_climbs(0) == 1
assert count_climbs(1) == 1
assert count_climbs(3) == 4
assert count_climbs(4) == 7
assert count_climbs(10) == 274
""",
    17: """
assert count_paths([[0, 0, 0], [0, 1, 0], [0, 0, 0]]) == 2
assert count_paths([[0, 0], [0, 0]]) == 2
assert count_paths([[1]]) == 0
assert count_paths([[0]]) == 1
assert count_paths([[0, 0], [0, 1]]) == 0
assert count_paths([[0] * 4 for _ in range(4)]) == 20
""",
    18: """
assert can_segment("applepenapple", ["apple", "pen"])
assert not can_segment("catsandog", ["cats", "dog", "sand", "and", "cat"])
assert can_segment("", ["a"])
assert not can_segment("abc", [])
assert can_segment("aaaa", ["aa"])
""",
    19: """
assert edit_distance("kitten", "sitting") == 3
assert edit_distance("", "abc") == 3
assert edit_distance("abc", "") == 3
assert edit_distance("same", "same") == 0
assert edit_distance("flaw", "lawn") == 2
""",
    20: """
s = Stack()
assert s.is_empty() and len(s) == 0
s.push(1)
s.push(2)
assert s.peek() == 2 and len(s) == 2
assert s.pop() == 2 and s.pop() == 1
assert s.is_empty()
for method in (s.pop, s.peek):
    try:
        method()
    except IndexError:
        pass
    else:
        raise AssertionError("expected IndexError")
""",
    21: """
q = TwoStackQueue()
for i in range(3):
    q.enqueue(i)
assert q.dequeue() == 0
q.enqueue(3)
assert [q.dequeue() for _ in range(3)] == [1, 2, 3]
assert len(q) == 0
try:
    q.dequeue()
except IndexError:
    pass
else:
    raise AssertionError("expected IndexError")
""",
    22: """
cache = LRUCache(2)
cache.put("a", 1)
cache.put("b", 2)
assert cache.get("a") == 1
cache.put("c", 3)
assert cache.get("b") == -1
assert cache.get("a") == 1 and cache.get("c") == 3
cache.put("a", 10)
cache.put("d", 4)
assert cache.get("c") == -1 and cache.get("a") == 10
assert cache.get("missing") == -1
""",
    23: """
assert days_between("2024-01-01", "2024-03-01") == 60
assert days_between("2023-03-01", "2023-01-01") == 59
assert days_between("2000-05-05", "2000-05-05") == 0
assert days_between("1999-12-31", "2000-01-01") == 1
""",
    24: """
assert weekday_name("14/07/2021") == "Wednesday"
assert weekday_name("01/01/2000") == "Saturday"
assert weekday_name("29/02/2024") == "Thursday"
try:
    weekday_name("31/02/2024")
except ValueError:
    pass
else:
    raise AssertionError("expected ValueError")
""",
    25: """
text = "Contact alice@example.com or bob.smith@mail.co.uk; ignore user@ and @host."
assert extract_emails(text) == ["alice@example.com", "bob.smith@mail.co.uk"]
assert extract_emails("") == []
assert extract_emails("no emails here") == []
assert extract_emails("x+tag@sub.domain.org.") == ["x+tag@sub.domain.org"]
""",
    26: """
assert is_hex_color("#fff") and is_hex_color("#1A2b3C")
assert not is_hex_color("fff")
assert not is_hex_color("#ffff")
assert not is_hex_color("#12345g")
assert not is_hex_color("#1234567")
assert not is_hex_color("")
""",
    27: """
assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]
assert transpose([]) == []
assert transpose([[7]]) == [[7]]
assert transpose([[1], [2], [3]]) == [[1, 2, 3]]
""",
    28: """
assert matrix_multiply([[1, 2], [3, 4]], [[5, 6], [7, 8]]) == [[19, 22], [43, 50]]
assert matrix_multiply([[1, 2, 3]], [[1], [2], [3]]) == [[14]]
assert matrix_multiply([[2]], [[3]]) == [[6]]
identity = [[1, 0], [0, 1]]
assert matrix_multiply(identity, [[9, 8], [7, 6]]) == [[9, 8], [7, 6]]
try:
    matrix_multiply([[1, 2]], [[1, 2]])
except ValueError:
    pass
else:
    raise AssertionError("expected ValueError")
""",
    29: """
assert rotate_clockwise([[1, 2], [3, 4]]) == [[3, 1], [4, 2]]
m = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
assert rotate_clockwise(m) == [[7, 4, 1], [8, 5, 2], [9, 6, 3]]
assert m == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
assert rotate_clockwise([]) == []
r = m
for _ in range(4):
    r = rotate_clockwise(r)
assert r == m
""",
    30: """
assert reverse_bits(1) == 2 ** 31
assert reverse_bits(0) == 0
assert reverse_bits(0b1011, width=4) == 0b1101
assert reverse_bits(0b0001, width=4) == 0b1000
assert reverse_bits(43261596) == 964176192
""",
    31: """
assert unpack_rgb(0xFF8000) == (255, 128, 0)
assert unpack_rgb(0) == (0, 0, 0)
assert unpack_rgb(0xFFFFFF) == (255, 255, 255)
assert unpack_rgb(0x0A0B0C) == (10, 11, 12)
for bad in (-1, 0x1000000):
    try:
        unpack_rgb(bad)
    except ValueError:
        pass
    else:
        raise AssertionError("expected ValueError")
""",
    32: """
assert set_bit_positions(0) == []
assert set_bit_positions(1) == [0]
assert set_bit_positions(0b10110) == [1, 2, 4]
assert set_bit_positions(2 ** 70 + 8) == [3, 70]
""",
    33: """
assert evaluate_rpn(["2", "1", "+", "3", "*"]) == 9
assert evaluate_rpn(["4", "13", "5", "/", "+"]) == 6
assert evaluate_rpn(["7", "-2", "/"]) == -3
assert evaluate_rpn(["42"]) == 42
assert evaluate_rpn(["3", "4", "-"]) == -1
""",
    34: """
assert parse_key_values("name = Ada; lang=Python ;; level= 3") == {
    "name": "Ada", "lang": "Python", "level": "3"}
assert parse_key_values("") == {}
assert parse_key_values("url=a=b") == {"url": "a=b"}
try:
    parse_key_values("broken")
except ValueError:
    pass
else:
    raise AssertionError("expected ValueError")
""",
    35: """
from itertools import islice
assert list(islice(fibonacci(), 10)) == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]
assert next(fibonacci()) == 0
assert list(islice(fibonacci(), 0)) == []
assert list(islice(fibonacci(), 50, 51)) == [12586269025]
""",
    36: """
assert list(sliding_window([1, 2, 3, 4], 2)) == [(1, 2), (2, 3), (3, 4)]
assert list(sliding_window("abc", 3)) == [("a", "b", "c")]
assert list(sliding_window([1, 2], 3)) == []
assert list(sliding_window(iter(range(4)), 1)) == [(0,), (1,), (2,), (3,)]
""",
    37: """
assert is_strong_password("Passw0rd!")
assert not is_strong_password("Pw0!")
assert not is_strong_password("password1!")
assert not is_strong_password("PASSWORD1!")
assert not is_strong_password("Password!!")
assert not is_strong_password("Password12")
assert not is_strong_password("")
""",
    38: r"""
assert strip_html_tags("<p>Hello <b>world</b></p>") == "Hello world"
assert strip_html_tags("no tags") == "no tags"
assert strip_html_tags("") == ""
assert strip_html_tags('<a href="x">link</a>\n<br/>end') == "link end"
""",
    39: """
assert merge_intervals([[1, 3], [8, 10], [2, 6], [15, 18]]) == [[1, 6], [8, 10], [15, 18]]
assert merge_intervals([]) == []
assert merge_intervals([[1, 4], [4, 5]]) == [[1, 5]]
assert merge_intervals([[1, 10], [2, 3]]) == [[1, 10]]
assert merge_intervals([[5, 6]]) == [[5, 6]]
""",
    40: """
assert free_slots([(60, 120), (30, 90), (200, 240)], 0, 300) == [(0, 30), (120, 200), (240, 300)]
assert free_slots([], 540, 1020) == [(540, 1020)]
assert free_slots([(0, 500)], 100, 400) == []
assert free_slots([(100, 200)], 100, 200) == []
assert free_slots([(50, 60)], 0, 55) == [(0, 50)]
""",
    41: """
g = {"A": ["B", "C"], "B": ["D"], "C": ["D", "E"], "D": ["F"], "E": ["F"], "F": []}
assert shortest_path(g, "A", "F") == ["A", "B", "D", "F"]
assert shortest_path(g, "A", "A") == ["A"]
assert shortest_path(g, "F", "A") is None
assert shortest_path({}, "X", "Y") is None
""",
    42: """
assert count_components(5, [(0, 1), (1, 2), (3, 4)]) == 2
assert count_components(3, []) == 3
assert count_components(0, []) == 0
assert count_components(4, [(0, 1), (1, 2), (2, 3), (3, 0)]) == 1
""",
    43: """
g = {"shirt": ["tie", "belt"], "tie": ["jacket"], "pants": ["shoes", "belt"], "belt": ["jacket"]}
order = topological_order(g)
assert sorted(order) == ["belt", "jacket", "pants", "shirt", "shoes", "tie"]
assert all(order.index(u) < order.index(v) for u, vs in g.items() for v in vs)
assert topological_order({}) == []
try:
    topological_order({"a": ["b"], "b": ["a"]})
except ValueError:
    pass
else:
    raise AssertionError("expected ValueError")
""",
    44: """
assert count_islands(["1100", "1001", "0011"]) == 2
assert count_islands([]) == 0
assert count_islands(["000"]) == 0
assert count_islands(["101", "010", "101"]) == 5
assert count_islands(["111", "111"]) == 1
""",
    45: """
assert format_duration(3725) == "1h 2m 5s"
assert format_duration(0) == "0s"
assert format_duration(60) == "1m"
assert format_duration(7200) == "2h"
assert format_duration(3601) == "1h 1s"
assert format_duration(59) == "59s"
""",
    46: """
assert slugify("Hello, World!") == "hello-world"
assert slugify("  Python 3.11 -- Whats New?  ") == "python-3-11-whats-new"
assert slugify("") == ""
assert slugify("***") == ""
assert slugify("already-a-slug") == "already-a-slug"
""",
    47: """
assert wrap_text("the quick brown fox jumps over the lazy dog", 10) == [
    "the quick", "brown fox", "jumps over", "the lazy", "dog"]
assert wrap_text("", 5) == []
assert wrap_text("extraordinary word", 5) == ["extraordinary", "word"]
assert wrap_text("a b c", 5) == ["a b c"]
""",
    48: """
assert vigenere_encrypt("ATTACKATDAWN", "LEMON") == "LXFOPVEFRNHR"
assert vigenere_encrypt("Hello, World!", "key") == "Rijvs, Uyvjn!"
assert vigenere_encrypt("", "abc") == ""
assert vigenere_encrypt("xyz", "a") == "xyz"
""",
    49: """
words = ["apple", "pear", "apple", "fig", "pear", "kiwi", "apple"]
assert top_k_words(words, 2) == ["apple", "pear"]
assert top_k_words(words, 4) == ["apple", "pear", "fig", "kiwi"]
assert top_k_words([], 3) == []
assert top_k_words(["b", "a"], 1) == ["a"]
""",
    50: """
assert moving_average([1, 2, 3, 4, 5], 2) == [1.5, 2.5, 3.5, 4.5]
assert moving_average([10, 20, 30], 3) == [20.0]
assert moving_average([1, 2], 3) == []
assert moving_average([4, 8], 1) == [4.0, 8.0]
try:
    moving_average([1], 0)
except ValueError:
    pass
else:
    raise AssertionError("expected ValueError")
""",
    51: """
words = ["listen", "google", "silent", "enlist", "gogole", "cat"]
assert group_anagrams(words) == [["listen", "silent", "enlist"], ["google", "gogole"], ["cat"]]
assert group_anagrams([]) == []
assert group_anagrams(["a", "a"]) == [["a", "a"]]
assert group_anagrams(["ab", "ba", "abc"]) == [["ab", "ba"], ["abc"]]
""",
    52: """
assert spiral_order([[1, 2, 3], [4, 5, 6], [7, 8, 9]]) == [1, 2, 3, 6, 9, 8, 7, 4, 5]
assert spiral_order([[1, 2, 3, 4], [5, 6, 7, 8]]) == [1, 2, 3, 4, 8, 7, 6, 5]
assert spiral_order([]) == []
assert spiral_order([[1], [2], [3]]) == [1, 2, 3]
""",
    53: """
assert longest_unique_substring("abcabcbb") == 3
assert longest_unique_substring("bbbbb") == 1
assert longest_unique_substring("pwwkew") == 3
assert longest_unique_substring("") == 0
assert longest_unique_substring("abba") == 2
""",
    54: """
assert knapsack([1, 3, 4, 5], [1, 4, 5, 7], 7) == 9
assert knapsack([10], [100], 5) == 0
assert knapsack([], [], 10) == 0
assert knapsack([2, 2, 2], [3, 3, 3], 4) == 6
assert knapsack([5], [10], 5) == 10
""",
    55: """
g = {"a": [("b", 4), ("c", 1)], "c": [("b", 2), ("d", 7)], "b": [("d", 1)], "x": [("a", 1)]}
assert dijkstra(g, "a") == {"a": 0, "b": 3, "c": 1, "d": 4}
assert dijkstra(g, "d") == {"d": 0}
assert dijkstra({}, "q") == {"q": 0}
assert dijkstra(g, "x")["d"] == 5
""",
    56: """
acct = BankAccount(100)
assert acct.deposit(50) == 150
assert acct.withdraw(30) == 120
assert BankAccount().balance == 0
for bad in (lambda: acct.withdraw(1000), lambda: acct.deposit(0), lambda: acct.withdraw(-5)):
    try:
        bad()
    except ValueError:
        pass
    else:
        raise AssertionError("expected ValueError")
assert acct.balance == 120
""",
    57: """
assert add_minutes("23:45", 30) == "00:15"
assert add_minutes("00:10", -20) == "23:50"
assert add_minutes("12:00", 0) == "12:00"
assert add_minutes("08:30", 24 * 60 * 3 + 5) == "08:35"
""",
    58: """
assert is_valid_isbn10("0-306-40615-2")
assert is_valid_isbn10("080442957X")
assert not is_valid_isbn10("0-306-40615-3")
assert not is_valid_isbn10("12345")
assert not is_valid_isbn10("X123456789")
assert not is_valid_isbn10("")
""",
    59: """
assert luhn_valid("4539 3195 0343 6467")
assert luhn_valid("79927398713")
assert not luhn_valid("8273 1232 7352 0569")
assert not luhn_valid("0")
assert not luhn_valid("059a")
assert luhn_valid("0 0")
""",
    60: """
data = {"user": {"name": "Ann", "addresses": [{"city": "Oslo"}, {"city": "Rome"}]}}
assert deep_get(data, "user.addresses.1.city") == "Rome"
assert deep_get(data, "user.name") == "Ann"
assert deep_get(data, "user.addresses.5.city", "?") == "?"
assert deep_get(data, "user.age") is None
assert deep_get(data, "user.name.first", 0) == 0
""",
    61: """
assert gray_code(0) == [0]
assert gray_code(2) == [0, 1, 3, 2]
assert gray_code(3) == [0, 1, 3, 2, 6, 7, 5, 4]
codes = gray_code(6)
assert sorted(codes) == list(range(64))
assert all(bin(a ^ b).count("1") == 1 for a, b in zip(codes, codes[1:]))
""",
    62: """
words = ["Apple", "apple", "Banana", "APPLE", "cherry"]
assert unique_by(words, str.lower) == ["Apple", "Banana", "cherry"]
assert unique_by([], len) == []
assert unique_by(["a", "bb", "cc", "d"], len) == ["a", "bb"]
assert unique_by([3, 1, 3], lambda x: x) == [3, 1]
""",
    63: """
assert pascal_row(0) == [1]
assert pascal_row(1) == [1, 1]
assert pascal_row(4) == [1, 4, 6, 4, 1]
assert sum(pascal_row(10)) == 1024
""",
    64: """
assert parse_duration("1h30m") == 5400
assert parse_duration("45s") == 45
assert parse_duration("2h 5m 10s") == 7510
assert parse_duration("90m") == 5400
for bad in ("", "abc", "5x", "1m1h"):
    try:
        parse_duration(bad)
    except ValueError:
        pass
    else:
        raise AssertionError(f"expected ValueError for {bad!r}")
""",
    65: """
assert digit_root(0) == 0
assert digit_root(9) == 9
assert digit_root(38) == 2
assert digit_root(493193) == 2
assert digit_root(10 ** 20) == 1
""",
    66: """
s = MinStack()
s.push(5)
s.push(2)
s.push(7)
s.push(2)
assert s.get_min() == 2 and s.top() == 2
assert s.pop() == 2 and s.get_min() == 2
s.pop()
s.pop()
assert s.get_min() == 5 and s.top() == 5
try:
    MinStack().get_min()
except IndexError:
    pass
else:
    raise AssertionError("expected IndexError")
""",
    67: """
assert list(interleave([1, 2, 3], "ab", [True])) == [1, "a", True, 2, "b", 3]
assert list(interleave()) == []
assert list(interleave([], [1, 2])) == [1, 2]
assert list(interleave(range(2), range(10, 12))) == [0, 10, 1, 11]
""",
    68: """
assert parse_query_string("q=python+dict&tag=a&tag=b%20c") == {
    "q": ["python dict"], "tag": ["a", "b c"]}
assert parse_query_string("") == {}
assert parse_query_string("?x=") == {"x": [""]}
assert parse_query_string("a=1&b=2&a=3") == {"a": ["1", "3"], "b": ["2"]}
""",
    69: """
assert is_anagram_of_palindrome("Tact Coa")
assert is_anagram_of_palindrome("")
assert not is_anagram_of_palindrome("abc")
assert is_anagram_of_palindrome("aabb!!")
assert not is_anagram_of_palindrome("aabbcd")
""",
    70: """
assert nqueens_count(1) == 1
assert nqueens_count(2) == 0
assert nqueens_count(3) == 0
assert nqueens_count(4) == 2
assert nqueens_count(6) == 4
assert nqueens_count(8) == 92
""",
    71: """
assert int_to_words(0) == "zero"
assert int_to_words(13) == "thirteen"
assert int_to_words(40) == "forty"
assert int_to_words(342) == "three hundred forty-two"
assert int_to_words(900) == "nine hundred"
assert int_to_words(999) == "nine hundred ninety-nine"
try:
    int_to_words(1000)
except ValueError:
    pass
else:
    raise AssertionError("expected ValueError")
""",
}


def build_dev_task(index: int, row: dict, check_code: str) -> dict:
    """A HumanEval-shaped problem from bundled seed row ``index`` and its reference checks.

    The prompt is the solution's imports, the entry point's signature and the instruction as
    its docstring; ``canonical_solution`` is the seed's own answer (a whole program).
    """
    tree = ast.parse(row["output"])
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(funcs) != 1 or row.get("input"):
        raise ValueError(f"seed row {index}: a dev task needs one function and no input")
    func = funcs[0]
    lines = row["output"].splitlines()
    imports = [ast.get_source_segment(row["output"], n) for n in tree.body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    signature = "\n".join(lines[func.lineno - 1: func.body[0].lineno - 1])
    text = row["instruction"].replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    doc = textwrap.fill(text, width=88, initial_indent="    ", subsequent_indent="    ",
                        break_on_hyphens=False)
    prompt = "".join(f"{i}\n" for i in imports) + ("\n\n" if imports else "")
    prompt += f'{signature}\n    """\n{doc}\n    """\n'
    test = "def check(candidate):\n" + textwrap.indent(textwrap.dedent(check_code).strip(),
                                                     "    ") + "\n"
    return {"task_id": f"SeedDev/{index}", "seed_index": index,
            "seed_id": row_id(row["instruction"], row.get("input", "")),
            "instruction": row["instruction"], "prompt": prompt, "entry_point": func.name,
            "canonical_solution": row["output"], "test": test}
