using Gill.ML.Tokenization;
using TorchSharp;

namespace Gill.ML.Tests.Tokenization;

[TestClass]
public class GillTokenizerTests
{
    private static readonly string[] s_texts =
    {
        "Hello world",
        " the",
        "The cat sat on the mat.",
        "  hello   world\n\nnew line\t tab ",
        "I'm sure they'll say it's 12345 or 3.14159!",
        "naïve café 東京 🙂 — “quotes”",
        "a<|endoftext|>b",
        "",
    };

    [TestMethod]
    public void Gpt2PackageGivesKnownIds()
    {
        GillTokenizer t = GillTokenizer.Gpt2();
        CollectionAssert.AreEqual(new[] { 15496, 995 }, t.Encode("Hello world"));
        CollectionAssert.AreEqual(new[] { 262 }, t.Encode(" the"));
        CollectionAssert.AreEqual(new[] { 50256 }, t.Encode("<|endoftext|>"));
        CollectionAssert.AreEqual(new[] { 464 }, t.Encode("The"));
        CollectionAssert.AreEqual(new[] { 198 }, t.Encode("\n"));
        CollectionAssert.AreEqual(new[] { 0 }, t.Encode("!"));
        CollectionAssert.AreEqual(new[] { 11 }, t.Encode(","));
        CollectionAssert.AreEqual(new[] { 13 }, t.Encode("."));
        CollectionAssert.AreEqual(new[] { 15496, 50256, 995 }, t.Encode("Hello<|endoftext|> world"));
        Assert.AreEqual(50257, t.BaseVocabularySize);
        Assert.AreEqual(50257, t.Count);
        Assert.AreEqual(50256, t.BosTokenId);
        Assert.AreEqual(50256, t.EosTokenId);
        Assert.IsNull(t.PadTokenId);
        Assert.IsFalse(t.AddBosToken);
        Assert.AreEqual("Ġthe", t.GetToken(262));
    }

    [TestMethod]
    public void Gpt2RoundTripsText()
    {
        GillTokenizer t = GillTokenizer.Gpt2();
        foreach (string text in s_texts)
        {
            Assert.AreEqual(text, t.Decode(t.Encode(text)), $"round trip of '{text}'");
        }
        Assert.AreEqual("Hello world", t.Decode(new[] { 50256, 15496, 995, 50256 }, skipSpecialTokens: true));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => t.Decode(new[] { 60000 }));
    }

    [TestMethod]
    public void FolderFilesEncodeLikeTheDataPackage()
    {
        GillTokenizer package = GillTokenizer.Gpt2();
        GillTokenizer folder = GillTokenizer.FromFolder(TokenizerTestFiles.Gpt2Folder);
        Assert.AreEqual(50257, folder.BaseVocabularySize);
        Assert.IsFalse(folder.AddBosToken);
        foreach (string text in s_texts.Concat(RandomTexts(300, seed: 7)))
        {
            CollectionAssert.AreEqual(package.Encode(text), folder.Encode(text), $"ids of '{text}'");
            Assert.AreEqual(text, folder.Decode(folder.Encode(text)));
        }
    }

    /// <summary>Texts mixing words, digits, punctuation, runs of whitespace, accents, CJK and emoji.</summary>
    private static IEnumerable<string> RandomTexts(int count, int seed)
    {
        string[] pieces =
        {
            "the", "The", " cat", "CATS", "isn't", "we're", "I'd", "'ll", "12", "3.5", "1999", "!", "?!", "...", ",", "\"",
            "(x)", "#", "$", "€", " ", "  ", "\n", "\n\n", "\t", "é", "naïve", "Ünïcödé", "東京", "日本語", "🙂", "👍🏽", "ß", "Ω",
            "hello", "world", "-", "_", "@user", "http://a.b/c?d=e", "<b>", "[IMG]", "{}", "~~",
        };
        var random = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            int n = random.Next(1, 12);
            var sb = new System.Text.StringBuilder();
            for (int j = 0; j < n; j++)
            {
                sb.Append(pieces[random.Next(pieces.Length)]);
                if (random.Next(3) == 0)
                {
                    sb.Append(' ');
                }
            }
            yield return sb.ToString();
        }
    }

    [TestMethod]
    public void OptShapedFolderUsesOptConventions()
    {
        GillTokenizer t = GillTokenizer.FromFolder(TokenizerTestFiles.OptShapedFolder);
        int s = TokenizerTestFiles.OptShift;
        Assert.AreEqual(50265, t.Count);
        Assert.AreEqual(2, t.BosTokenId);
        Assert.AreEqual(2, t.EosTokenId);
        Assert.AreEqual(1, t.PadTokenId);
        Assert.IsTrue(t.AddBosToken);
        CollectionAssert.AreEqual(new[] { 2, 15496 + s, 995 + s }, t.Encode("Hello world"));
        CollectionAssert.AreEqual(new[] { 15496 + s, 995 + s }, t.Encode("Hello world", addBos: false));
        // "</s>" and "<pad>" are special tokens and stay whole; "<s>" is not special in OPT and is split.
        CollectionAssert.AreEqual(new[] { 2, 262 + s, 2, 1 }, t.Encode(" the</s><pad>"));
        Assert.IsTrue(t.Encode("<s>", addBos: false).Length > 1);
        Assert.AreEqual("</s>Hello world", t.Decode(t.Encode("Hello world")));
        Assert.AreEqual("Hello world", t.Decode(t.Encode("Hello world"), skipSpecialTokens: true));
    }

    [TestMethod]
    public void OptWithoutTokenizerFilesIsRefused()
    {
        string dir = TokenizerTestFiles.NewTempDir("opt-empty");
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"model_type": "opt"}""");
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => GillTokenizer.FromFolder(dir));
        StringAssert.Contains(e.Message, Path.Combine(dir, "vocab.json"));
    }

    [TestMethod]
    public void Gpt2FolderWithoutFilesFallsBackToThePackage()
    {
        string dir = TokenizerTestFiles.NewTempDir("gpt2-empty");
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"model_type": "gpt2"}""");
        GillTokenizer t = GillTokenizer.FromFolder(dir);
        CollectionAssert.AreEqual(new[] { 15496, 995 }, t.Encode("Hello world"));
    }

    [TestMethod]
    public void MissingVocabularyOrMergesNamesThePath()
    {
        string dir = TokenizerTestFiles.NewTempDir("half");
        File.WriteAllText(Path.Combine(dir, "vocab.json"), """{"a": 0}""");
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => GillTokenizer.FromFolder(dir));
        StringAssert.Contains(e.Message, Path.Combine(dir, "merges.txt"));

        var e2 = Assert.ThrowsExactly<FileNotFoundException>(() => GillTokenizer.FromFiles(Path.Combine(dir, "nope.json"), Path.Combine(dir, "merges.txt")));
        StringAssert.Contains(e2.Message, Path.Combine(dir, "nope.json"));

        Assert.ThrowsExactly<DirectoryNotFoundException>(() => GillTokenizer.FromFolder(Path.Combine(dir, "absent")));
    }

    [TestMethod]
    public void AddedTokensFollowTheHuggingFaceRule()
    {
        GillTokenizer gpt2 = GillTokenizer.Gpt2();
        GillTokenIds ids = gpt2.AddGillTokens();
        Assert.AreEqual(50257, ids.ImageTokenId);
        CollectionAssert.AreEqual(Enumerable.Range(50258, 8).ToArray(), ids.ImgTokenIds.ToArray());
        Assert.AreEqual(50266, gpt2.Count);
        // Existing tokens keep their ids and nothing is appended.
        CollectionAssert.AreEqual(new[] { 50258, 15496, 50256 }, gpt2.AddTokens("[IMG0]", "Hello", "<|endoftext|>"));
        Assert.AreEqual(50266, gpt2.Count);

        GillTokenizer opt = GillTokenizer.FromFolder(TokenizerTestFiles.OptShapedFolder);
        GillTokenIds optIds = opt.AddGillTokens();
        Assert.AreEqual(50265, optIds.ImageTokenId);
        CollectionAssert.AreEqual(Enumerable.Range(50266, 8).ToArray(), optIds.ImgTokenIds.ToArray());
        Assert.AreEqual(50274, opt.Count);
        Assert.AreEqual(50266, opt.GetTokenId("[IMG0]"));

        GillTokenizer fromage = GillTokenizer.FromFolder(TokenizerTestFiles.OptShapedFolder);
        GillTokenIds ret = fromage.AddFromageTokens();
        CollectionAssert.AreEqual(new[] { 50266 }, ret.ImgTokenIds.ToArray());
    }

    [TestMethod]
    public void AddedTokensAreAtomicInText()
    {
        GillTokenizer opt = GillTokenizer.FromFolder(TokenizerTestFiles.OptShapedFolder);
        opt.AddGillTokens();
        int[] cat = opt.Encode("a cat", addBos: false);
        int[] ids = opt.Encode("a cat[IMG0][IMG1]");
        CollectionAssert.AreEqual(new[] { 2 }.Concat(cat).Concat(new[] { 50266, 50267 }).ToArray(), ids);
        // Longest match first: "[IMG1]0" is [IMG1] then "0".
        int[] zero = opt.Encode("0", addBos: false);
        CollectionAssert.AreEqual(new[] { 50267 }.Concat(zero).ToArray(), opt.Encode("[IMG1]0", addBos: false));
        CollectionAssert.AreEqual(new[] { 50265 }, opt.Encode("<|image|>", addBos: false));

        Assert.AreEqual("</s>a cat [IMG0] [IMG1]", opt.Decode(ids));
        Assert.AreEqual("a cat [IMG0] [IMG1]", opt.Decode(ids, skipSpecialTokens: true));
        Assert.AreEqual("a cat", opt.Decode(new[] { 2 }.Concat(cat).Append(50265).ToArray(), skipSpecialTokens: true));

        GillTokenizer tight = GillTokenizer.FromFolder(TokenizerTestFiles.OptShapedFolder, new GillTokenizerOptions { SpacesBetweenAddedTokens = false });
        tight.AddGillTokens();
        Assert.AreEqual("a cat[IMG0][IMG1]", tight.Decode(tight.Encode("a cat[IMG0][IMG1]"), skipSpecialTokens: true));
    }

    [TestMethod]
    public void LegacyStrippingAroundAddedTokens()
    {
        GillTokenizer modern = GillTokenizer.Gpt2();
        GillTokenizer legacy = GillTokenizer.Gpt2(new GillTokenizerOptions { StripWhitespaceAroundAddedTokens = true });
        modern.AddGillTokens();
        legacy.AddGillTokens();
        CollectionAssert.AreEqual(legacy.Encode("a cat[IMG0]"), legacy.Encode("a cat [IMG0] "));
        CollectionAssert.AreNotEqual(modern.Encode("a cat[IMG0]"), modern.Encode("a cat [IMG0]"));
    }

    [TestMethod]
    public void AddingAnExistingTokenAsSpecialMakesItAtomic()
    {
        GillTokenizer t = GillTokenizer.Gpt2();
        int[] before = t.Encode("Hellothere", addBos: false);
        Assert.AreNotEqual(15496, before[0]);
        CollectionAssert.AreEqual(new[] { 15496 }, t.AddSpecialTokens("Hello"));
        Assert.AreEqual(50257, t.Count);
        Assert.AreEqual(15496, t.Encode("Hellothere", addBos: false)[0]);
        Assert.AreEqual(" world", t.Decode(new[] { 15496, 995 }, skipSpecialTokens: true));

        string file = Path.Combine(TokenizerTestFiles.NewTempDir("promoted"), "added.json");
        t.SaveAddedTokens(file);
        GillTokenizer reloaded = GillTokenizer.Gpt2();
        reloaded.LoadAddedTokens(file);
        Assert.IsTrue(reloaded.SpecialTokenIds.Contains(15496));
    }

    [TestMethod]
    public void PadTokenOutsideTheVocabularyIsAddedAsSpecial()
    {
        GillTokenizer t = GillTokenizer.Gpt2(new GillTokenizerOptions { PadToken = "[PAD]" });
        Assert.AreEqual(50257, t.PadTokenId);
        Assert.AreEqual(50258, t.Count);
        Assert.AreEqual(50258, t.AddTokens("[IMG0]")[0]);
        TokenBatch b = t.EncodeBatch(new[] { "Hello world", "Hello" });
        CollectionAssert.AreEqual(new long[] { 15496, 50257 }, b.InputIds[1]);
        Assert.AreEqual("Hello", t.Decode(b.InputIds[1].Select(i => (int)i), skipSpecialTokens: true));
    }

    [TestMethod]
    public void AddedTokensPersist()
    {
        GillTokenizer opt = GillTokenizer.FromFolder(TokenizerTestFiles.OptShapedFolder);
        opt.AddGillTokens();
        string file = Path.Combine(TokenizerTestFiles.NewTempDir("added"), "added_tokens.gill.json");
        opt.SaveAddedTokens(file);

        GillTokenizer reloaded = GillTokenizer.FromFolder(TokenizerTestFiles.OptShapedFolder);
        reloaded.LoadAddedTokens(file);
        CollectionAssert.AreEqual(opt.AddedTokens.ToArray(), reloaded.AddedTokens.ToArray());
        CollectionAssert.AreEqual(opt.Encode("x[IMG3]<|image|>"), reloaded.Encode("x[IMG3]<|image|>"));
        Assert.IsTrue(reloaded.SpecialTokenIds.Contains(50265));
        Assert.IsFalse(reloaded.SpecialTokenIds.Contains(50266));

        // The same file does not fit GPT-2's vocabulary: the ids would differ.
        var e = Assert.ThrowsExactly<InvalidDataException>(() => GillTokenizer.Gpt2().LoadAddedTokens(file));
        StringAssert.Contains(e.Message, "<|image|>");
        StringAssert.Contains(e.Message, file);

        // Hugging Face's added_tokens.json in a checkpoint folder is applied on load.
        string folder = TokenizerTestFiles.NewTempDir("opt-added");
        foreach (string f in Directory.GetFiles(TokenizerTestFiles.OptShapedFolder))
        {
            File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));
        }
        File.WriteAllText(Path.Combine(folder, "added_tokens.json"), """{"[IMG0]": 50266, "<|image|>": 50265}""");
        GillTokenizer hf = GillTokenizer.FromFolder(folder);
        Assert.AreEqual(50267, hf.Count);
        Assert.AreEqual(50266, hf.GetTokenId("[IMG0]"));
    }

    [TestMethod]
    public void BatchPaddingTruncationAndMasks()
    {
        GillTokenizer gpt2 = GillTokenizer.Gpt2(new GillTokenizerOptions { PadToken = "<|endoftext|>" });
        string[] texts = { "Hello world", " the" };

        TokenBatch right = gpt2.EncodeBatch(texts);
        CollectionAssert.AreEqual(new long[] { 15496, 995 }, right.InputIds[0]);
        CollectionAssert.AreEqual(new long[] { 262, 50256 }, right.InputIds[1]);
        CollectionAssert.AreEqual(new long[] { 1, 0 }, right.AttentionMask[1]);
        CollectionAssert.AreEqual(new[] { 2, 1 }, right.Lengths);

        TokenBatch left = gpt2.EncodeBatch(texts, new BatchEncodingOptions { PaddingSide = PaddingSide.Left, Padding = PaddingStrategy.MaxLength, MaxLength = 4 });
        CollectionAssert.AreEqual(new long[] { 50256, 50256, 15496, 995 }, left.InputIds[0]);
        CollectionAssert.AreEqual(new long[] { 0, 0, 0, 1 }, left.AttentionMask[1]);

        TokenBatch cutRight = gpt2.EncodeBatch(texts, new BatchEncodingOptions { MaxLength = 1, Truncation = true });
        CollectionAssert.AreEqual(new long[] { 15496 }, cutRight.InputIds[0]);
        TokenBatch cutLeft = gpt2.EncodeBatch(texts, new BatchEncodingOptions { MaxLength = 1, Truncation = true, TruncationSide = TruncationSide.Left });
        CollectionAssert.AreEqual(new long[] { 995 }, cutLeft.InputIds[0]);

        var e = Assert.ThrowsExactly<InvalidOperationException>(() => gpt2.EncodeBatch(texts, new BatchEncodingOptions { MaxLength = 1 }));
        StringAssert.Contains(e.Message, "Text 0 encodes to 2 tokens, more than the maximum length 1");

        // GPT-2 has no pad token of its own.
        Assert.ThrowsExactly<InvalidOperationException>(() => GillTokenizer.Gpt2().EncodeBatch(texts));

        TokenBatch ragged = GillTokenizer.Gpt2().EncodeBatch(texts, new BatchEncodingOptions { Padding = PaddingStrategy.None });
        Assert.AreEqual(1, ragged.InputIds[1].Length);
        Assert.ThrowsExactly<InvalidOperationException>(() => ragged.InputIdsTensor());

        using var ids = left.InputIdsTensor();
        using var mask = left.AttentionMaskTensor();
        CollectionAssert.AreEqual(new long[] { 2, 4 }, ids.shape);
        Assert.AreEqual(torch.ScalarType.Int64, ids.dtype);
        CollectionAssert.AreEqual(left.InputIds.SelectMany(r => r).ToArray(), ids.data<long>().ToArray());
        CollectionAssert.AreEqual(left.AttentionMask.SelectMany(r => r).ToArray(), mask.data<long>().ToArray());
    }

    [TestMethod]
    public void OptBatchKeepsBosWhenTruncating()
    {
        GillTokenizer opt = GillTokenizer.FromFolder(TokenizerTestFiles.OptShapedFolder);
        int s = TokenizerTestFiles.OptShift;
        TokenBatch b = opt.EncodeBatch(new[] { "Hello world", "Hello" }, new BatchEncodingOptions
        {
            MaxLength = 2,
            Truncation = true,
            TruncationSide = TruncationSide.Left,
            Padding = PaddingStrategy.MaxLength,
        });
        CollectionAssert.AreEqual(new long[] { 2, 995 + s }, b.InputIds[0]);
        CollectionAssert.AreEqual(new long[] { 2, 15496 + s }, b.InputIds[1]);
        TokenBatch padded = opt.EncodeBatch(new[] { "Hello world", "Hello" });
        CollectionAssert.AreEqual(new long[] { 2, 15496 + s, 1 }, padded.InputIds[1]);
        CollectionAssert.AreEqual(new long[] { 1, 1, 0 }, padded.AttentionMask[1]);
    }
}
