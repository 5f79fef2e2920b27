using System.Text.Json;
using Gill.ML.Tokenization;

namespace Gill.ML.Tests.Tokenization;

[TestClass]
public class ClipTokenizerTests
{
    // Hand-made CLIP layout: 256 byte characters (in CLIP's order: "!" = 0, "a" = 64), the same with "</w>"
    // (+256), then one entry per merge, then <|startoftext|> and <|endoftext|>.
    private const int Ca = 512, Cat = 513, Do = 514, Dog = 515, Sot = 516, Eot = 517;
    private const int AWord = 64 + 256, T = 't' - '!', SWord = 's' - '!' + 256, BangWord = 256;

    private static string HandMadeFolder(string? specialTokensMap = null)
    {
        var vocab = new Dictionary<string, int>();
        var chars = new List<char>();
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            if (printable)
            {
                chars.Add((char)b);
            }
        }
        for (int b = 0, n = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            if (!printable)
            {
                chars.Add((char)(256 + n++));
            }
        }
        foreach (char c in chars)
        {
            vocab[c.ToString()] = vocab.Count;
        }
        foreach (char c in chars)
        {
            vocab[c + "</w>"] = vocab.Count;
        }
        foreach (string t in new[] { "ca", "cat</w>", "do", "dog</w>", "<|startoftext|>", "<|endoftext|>" })
        {
            vocab[t] = vocab.Count;
        }
        string dir = TokenizerTestFiles.NewTempDir("clip");
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(vocab, TokenizerTestFiles.Json));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\nc a\nca t</w>\nd o\ndo g</w>\n");
        if (specialTokensMap is not null)
        {
            File.WriteAllText(Path.Combine(dir, "special_tokens_map.json"), specialTokensMap);
        }
        return dir;
    }

    [TestMethod]
    public void EncodesLikeClip()
    {
        ClipTokenizer t = ClipTokenizer.FromFolder(HandMadeFolder());
        Assert.AreEqual(Sot, t.BosTokenId);
        Assert.AreEqual(Eot, t.EosTokenId);
        Assert.AreEqual(Eot, t.PadTokenId);
        Assert.AreEqual(77, t.ModelMaxLength);
        Assert.AreEqual("a</w>", t.GetToken(AWord));
        // Whitespace collapse and lower-casing, every word ends in </w>.
        CollectionAssert.AreEqual(new[] { Sot, AWord, Cat, Dog, Eot }, t.Encode("  A \t Cat\nDOG "));
        // "cats": c+a merge, but "ca t" is not a merge (only "ca t</w>"), so t and s</w> stay.
        CollectionAssert.AreEqual(new[] { Sot, Ca, T, SWord, Eot }, t.Encode("Cats"));
        // Punctuation is its own word.
        CollectionAssert.AreEqual(new[] { Dog, BangWord }, t.Encode("dog!", addSpecialTokens: false));
        // Special tokens in text stay whole.
        CollectionAssert.AreEqual(new[] { Sot, Cat, Eot, Eot }, t.Encode("cat<|endoftext|>"));
        Assert.AreEqual("<|startoftext|>a cat dog <|endoftext|>", t.Decode(t.Encode("A cat DOG")));
        Assert.AreEqual("a cats", t.Decode(t.Encode("a cats"), skipSpecialTokens: true));
    }

    [TestMethod]
    public void PadsAndTruncatesToTheModelMaximum()
    {
        ClipTokenizer t = ClipTokenizer.FromFolder(HandMadeFolder());
        TokenBatch b = t.EncodeBatch(new[] { "a cat", "dog" });
        Assert.AreEqual(77, b.InputIds[0].Length);
        CollectionAssert.AreEqual(new long[] { Sot, AWord, Cat, Eot, Eot }, b.InputIds[0][..5]);
        CollectionAssert.AreEqual(new long[] { 1, 1, 1, 1, 0 }, b.AttentionMask[0][..5]);
        Assert.IsTrue(b.InputIds[1][3..].All(id => id == Eot));
        // The empty (negative) prompt is BOS, EOS and padding.
        TokenBatch empty = t.EncodeBatch(new[] { "" });
        CollectionAssert.AreEqual(new long[] { Sot, Eot, Eot }, empty.InputIds[0][..3]);
        Assert.AreEqual(2, empty.Lengths[0]);
        using var ids = b.InputIdsTensor();
        CollectionAssert.AreEqual(new long[] { 2, 77 }, ids.shape);

        ClipTokenizer short4 = ClipTokenizer.FromFolder(HandMadeFolder(), new ClipTokenizerOptions { ModelMaxLength = 4 });
        TokenBatch cut = short4.EncodeBatch(new[] { "a cat dog", "a" });
        CollectionAssert.AreEqual(new long[] { Sot, AWord, Cat, Eot }, cut.InputIds[0]);
        CollectionAssert.AreEqual(new long[] { Sot, AWord, Eot, Eot }, cut.InputIds[1]);
        CollectionAssert.AreEqual(new long[] { 1, 1, 1, 0 }, cut.AttentionMask[1]);

        var e = Assert.ThrowsExactly<InvalidOperationException>(() =>
            short4.EncodeBatch(new[] { "a cat dog" }, new BatchEncodingOptions { Padding = PaddingStrategy.MaxLength }));
        StringAssert.Contains(e.Message, "more than the maximum length 4");
    }

    [TestMethod]
    public void PadTokenComesFromTheFolder()
    {
        ClipTokenizer t = ClipTokenizer.FromFolder(HandMadeFolder("""{"pad_token": {"content": "!", "lstrip": false}}"""));
        Assert.AreEqual(0, t.PadTokenId);
        TokenBatch b = t.EncodeBatch(new[] { "cat" }, new BatchEncodingOptions { Padding = PaddingStrategy.MaxLength, MaxLength = 5 });
        CollectionAssert.AreEqual(new long[] { Sot, Cat, Eot, 0, 0 }, b.InputIds[0]);
    }

    [TestMethod]
    public void MissingFilesNameThePath()
    {
        string dir = TokenizerTestFiles.NewTempDir("clip-missing");
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => ClipTokenizer.FromFolder(dir));
        StringAssert.Contains(e.Message, Path.Combine(dir, "vocab.json"));
        File.WriteAllText(Path.Combine(dir, "vocab.json"), """{"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}""");
        var e2 = Assert.ThrowsExactly<FileNotFoundException>(() => ClipTokenizer.FromFolder(dir));
        StringAssert.Contains(e2.Message, Path.Combine(dir, "merges.txt"));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\na b c\n");
        var e3 = Assert.ThrowsExactly<InvalidDataException>(() => ClipTokenizer.FromFolder(dir));
        StringAssert.Contains(e3.Message, "line 2");
    }

    [TestMethod]
    public void BuiltVocabularyMakesEveryCorpusWordOneToken()
    {
        string[] corpus =
        {
            "A red cube on a blue sphere.",
            "Two green cats sit at the category board",
            "a cat; a CAT, aaa aa a at ate late plate",
            "Cube cubes cubed   -- 3 spheres!",
        };
        string dir = TokenizerTestFiles.NewTempDir("clip-built");
        ClipVocabularyBuilder.Result built = ClipVocabularyBuilder.BuildAndSave(corpus, dir, modelMaxLength: 16);
        Assert.AreEqual(512 + built.Merges.Select(m => m.Replace(" ", "")).Distinct().Count() + 2, built.Vocabulary.Count);

        ClipTokenizer t = ClipTokenizer.FromFolder(dir);
        Assert.AreEqual(16, t.ModelMaxLength);
        Assert.AreEqual(built.Vocabulary.Count - 1, t.EosTokenId);
        Assert.AreEqual(t.EosTokenId, t.PadTokenId);
        foreach (string word in built.Words)
        {
            int[] ids = t.Encode(word, addSpecialTokens: false);
            Assert.AreEqual(1, ids.Length, $"'{word}' encodes to {ids.Length} tokens");
            Assert.AreEqual(word + "</w>", t.GetToken(ids[0]));
        }
        int[] caption = t.Encode("A red cube on a blue sphere.", addSpecialTokens: false);
        Assert.AreEqual(8, caption.Length);
        Assert.AreEqual("a red cube on a blue sphere .", t.Decode(caption));
        // A word outside the corpus still encodes (from bytes) and decodes.
        Assert.AreEqual("zebra", t.Decode(t.Encode("Zebra"), skipSpecialTokens: true));
    }
}
