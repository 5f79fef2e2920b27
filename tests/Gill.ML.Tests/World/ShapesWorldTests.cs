using System.Security.Cryptography;
using Gill.ML.World;

namespace Gill.ML.Tests.World;

[TestClass]
public class ShapesWorldTests
{
    private static readonly List<string> Created = [];

    /// <summary>A fresh temporary path (not created), deleted after the class's tests.</summary>
    internal static string NewFolder(string name)
    {
        string dir = Path.Combine(Path.GetTempPath(), "gill-world-tests", name + "-" + Guid.NewGuid().ToString("N")[..8]);
        lock (Created) Created.Add(dir);
        return dir;
    }

    [ClassCleanup]
    public static void DeleteFolders()
    {
        lock (Created)
        {
            foreach (var d in Created)
            {
                if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
                else if (File.Exists(d)) File.Delete(d);
            }
            Created.Clear();
        }
    }

    internal static ShapesWorldOptions Small(int seed = 7) => new()
    {
        Seed = seed,
        Images = new ShapesSplitCounts(300, 40, 40),
        HeldOutImages = 60,
        Stories = new ShapesSplitCounts(30, 5, 10),
        Dialogues = new ShapesSplitCounts(30, 5, 10),
        DecisionPrompts = new ShapesSplitCounts(40, 10, 20),
    };

    private static readonly Lazy<(ShapesWorldManifest Manifest, ShapesWorldDataset Data)> World = new(() =>
    {
        var m = ShapesWorld.Generate(Small(), NewFolder("shared"));
        return (m, ShapesWorldDataset.Load(m.Folder));
    });

    private static Dictionary<string, string> HashFiles(string root) =>
        Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(root, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    [TestMethod]
    public void SameSeedGivesByteIdenticalFiles_AnotherSeedDiffers()
    {
        var small = new ShapesWorldOptions
        {
            Seed = 3, Images = new ShapesSplitCounts(40, 5, 5), HeldOutImages = 5,
            Stories = new ShapesSplitCounts(4, 1, 1), Dialogues = new ShapesSplitCounts(4, 1, 1), DecisionPrompts = new ShapesSplitCounts(6, 2, 2),
            Backgrounds = [ShapesBackground.Black, ShapesBackground.Navy],
        };
        var a = ShapesWorld.Generate(small, NewFolder("det-a"));
        var b = ShapesWorld.Generate(small, NewFolder("det-b"));
        var ha = HashFiles(a.Folder);
        var hb = HashFiles(b.Folder);
        Assert.IsTrue(ha.Count > 100, $"only {ha.Count} files");
        CollectionAssert.AreEquivalent(ha.Keys.ToList(), hb.Keys.ToList());
        foreach (var (k, v) in ha) Assert.AreEqual(v, hb[k], $"{k} differs between two runs with the same seed");
        Assert.AreEqual(a.OptionsHash, b.OptionsHash);

        small.Seed = 4;
        var c = ShapesWorld.Generate(small, NewFolder("det-c"));
        Assert.AreNotEqual(ha["train.tsv"], HashFiles(c.Folder)["train.tsv"]);
        Assert.AreNotEqual(a.OptionsHash, c.OptionsHash);
    }

    [TestMethod]
    public void SplitsAreSeededIndependently()
    {
        ShapesWorldOptions Tiny(int validation) => new()
        {
            Seed = 11, Images = new ShapesSplitCounts(30, validation, 5), HeldOutImages = 5,
            Stories = new ShapesSplitCounts(2, 1, 1), Dialogues = new ShapesSplitCounts(2, 1, 1), DecisionPrompts = new ShapesSplitCounts(2, 2, 2),
        };
        var a = ShapesWorld.Generate(Tiny(5), NewFolder("indep-a"));
        var b = ShapesWorld.Generate(Tiny(9), NewFolder("indep-b"));
        foreach (var f in new[] { "train.tsv", "test.tsv", "heldout.tsv", "stories.train.jsonl", "dialogues.test.jsonl" })
            Assert.AreEqual(File.ReadAllText(Path.Combine(a.Folder, f)), File.ReadAllText(Path.Combine(b.Folder, f)), f);
        Assert.AreNotEqual(File.ReadAllText(Path.Combine(a.Folder, "validation.tsv")), File.ReadAllText(Path.Combine(b.Folder, "validation.tsv")));
    }

    [TestMethod]
    public void ManifestCountsMatchFilesAndLoader()
    {
        var (m, data) = World.Value;
        Assert.AreEqual(300, data.Images(ShapesSplit.Train).Count);
        Assert.AreEqual(60, data.Images(ShapesSplit.HeldOut).Count);
        Assert.AreEqual(10, data.Stories(ShapesSplit.Test).Count);
        Assert.AreEqual(30, data.Dialogues(ShapesSplit.Train).Count);
        Assert.AreEqual(20, data.DecisionPrompts(ShapesSplit.Test).Count);
        int pngs = Directory.EnumerateFiles(m.Folder, "*.png", SearchOption.AllDirectories).Count();
        Assert.AreEqual(m.PngFiles, pngs);
        Assert.AreEqual(300 + 40 + 40 + 60 + 5 * (30 + 5 + 10) + 30 + 5 + 10, pngs);
        Assert.IsFalse(Directory.EnumerateFiles(m.Folder, "*.tmp", SearchOption.AllDirectories).Any(), "temporary files left behind");

        // TSV: header, caption<TAB>relative image path that exists next to the TSV.
        var lines = File.ReadAllLines(Path.Combine(m.Folder, "train.tsv"));
        Assert.AreEqual("caption\timage", lines[0]);
        Assert.AreEqual(301, lines.Length);
        for (int i = 1; i < lines.Length; i++)
        {
            var cols = lines[i].Split('\t');
            Assert.AreEqual(2, cols.Length);
            Assert.AreEqual(data.Images(ShapesSplit.Train)[i - 1].Caption, cols[0]);
            Assert.IsTrue(File.Exists(Path.Combine(m.Folder, cols[1])), cols[1]);
        }
        Assert.IsTrue(data.Images(ShapesSplit.Train).All(x => File.Exists(x.ImagePath) && Path.IsPathRooted(x.ImagePath)));
        var corpus = File.ReadAllLines(data.CorpusPath(ShapesSplit.Train));
        Assert.AreEqual(300 + 30 + 30, corpus.Length);
        Assert.IsTrue(corpus.Any(l => l.Contains("Q: what")));
        var loadedOptions = data.Manifest.Options;
        Assert.AreEqual(m.OptionsHash, loadedOptions.Hash());
        CollectionAssert.AreEqual(Small().HeldOutPairs.ToList(), loadedOptions.HeldOutPairs.ToList());
    }

    [TestMethod]
    public void ImagesAreTheRenderedScenes()
    {
        var (m, data) = World.Value;
        foreach (var x in data.Images(ShapesSplit.Validation).Take(10))
        {
            var pixels = ShapesRenderer.LoadPixels(x.ImagePath, out int w, out int h);
            Assert.AreEqual(32, w);
            Assert.AreEqual(32, h);
            CollectionAssert.AreEqual(ShapesRenderer.RenderPixels(x.Scene, 32), pixels);
        }
        // A single red object on black: the dominant non-background colour is red at the object centre.
        var red = new ShapesScene(ShapesBackground.Black, [new ShapesObject(ShapeKind.Square, ShapeColor.Red, ShapeSize.Large, ShapePosition.Left)]);
        var p = ShapesRenderer.RenderPixels(red, 32);
        var (cx, cy) = ShapesRenderer.Centre(ShapePosition.Left, 32);
        int idx = cy * 32 + cx;
        Assert.IsTrue(p[idx] > 0.85f && p[1024 + idx] < 0.2f && p[2048 + idx] < 0.2f);
        Assert.AreEqual(0f, p[0 * 1024 + 31 * 32 + 31]); // far corner stays black
    }

    [TestMethod]
    public void HeldOutPairsAbsentFromTrainAndPresentInHeldOutSplit()
    {
        var (m, data) = World.Value;
        var held = m.Options.HeldOutPairs.ToHashSet();
        foreach (var split in new[] { ShapesSplit.Train, ShapesSplit.Validation, ShapesSplit.Test })
        {
            Assert.IsFalse(data.Images(split).SelectMany(x => x.Scene.Objects).Any(o => held.Contains(o.Pair)), $"held-out pair in {split}");
            Assert.IsFalse(data.Stories(split).SelectMany(s => s.Steps).SelectMany(x => x.Scene.Objects).Any(o => held.Contains(o.Pair)), $"held-out pair in stories/{split}");
            Assert.IsFalse(data.Dialogues(split).SelectMany(x => x.Scene.Objects).Any(o => held.Contains(o.Pair)), $"held-out pair in dialogues/{split}");
        }
        var heldOut = data.Images(ShapesSplit.HeldOut);
        Assert.IsTrue(heldOut.All(x => x.Scene.Objects.Any(o => held.Contains(o.Pair))));
        foreach (var pair in held) Assert.IsTrue(heldOut.Any(x => x.Scene.Objects.Any(o => o.Pair == pair)), $"{pair} never drawn in the held-out split");
        var trainCorpus = File.ReadAllText(data.CorpusPath(ShapesSplit.Train));
        foreach (var pair in held) Assert.IsFalse(trainCorpus.Contains(pair.ToString()), $"'{pair}' appears in the training corpus");
    }

    [TestMethod]
    public void CaptionsMatchAttributes()
    {
        var (_, data) = World.Value;
        var all = data.Images(ShapesSplit.Train).Concat(data.Images(ShapesSplit.HeldOut)).ToList();
        Assert.IsTrue(all.Any(x => x.Scene.Objects.Count == 2) && all.Any(x => x.Scene.Objects.Count == 1));
        Assert.IsTrue(all.Any(x => x.Mentions == ShapesMentions.All) && all.Any(x => x.Mentions != ShapesMentions.All));
        foreach (var x in all)
        {
            var c = x.Caption;
            foreach (var o in x.Scene.Objects)
                StringAssert.Contains(c, $"{ShapesWords.Color(o.Color)} {ShapesWords.Shape(o.Shape)}", x.ToString());
            if (x.Scene.Objects.Count == 1)
            {
                var parsed = ShapesCaptions.ParseSingle(c);
                Assert.IsNotNull(parsed, c);
                var o = x.Scene.Objects[0];
                Assert.AreEqual(o.Color, parsed.Value.Color, c);
                Assert.AreEqual(o.Shape, parsed.Value.Shape, c);
                Assert.AreEqual(x.Mentions.HasFlag(ShapesMentions.Size) ? o.Size : null, parsed.Value.Size, c);
                Assert.AreEqual(x.Mentions.HasFlag(ShapesMentions.Position) ? o.Position : null, parsed.Value.Position, c);
            }
            else
            {
                var (a, b) = (x.Scene.Objects[0], x.Scene.Objects[1]);
                Assert.IsTrue(a.Position is ShapePosition.Left or ShapePosition.Top);
                Assert.AreEqual(a.Position == ShapePosition.Left ? ShapePosition.Right : ShapePosition.Bottom, b.Position);
                string pa = $"{ShapesWords.Color(a.Color)} {ShapesWords.Shape(a.Shape)}", pb = $"{ShapesWords.Color(b.Color)} {ShapesWords.Shape(b.Shape)}";
                if (c.Contains(" above ")) Assert.IsTrue(c.IndexOf(pa) < c.IndexOf(" above ") && c.IndexOf(pb) > c.IndexOf(" above "), c);
                if (c.Contains(" below ") || c.Contains(" under ") || c.Contains(" to the right of "))
                    Assert.IsTrue(c.IndexOf(pb) < c.IndexOf(pa), c);
                if (c.Contains(" to the left of ")) Assert.IsTrue(c.IndexOf(pa) < c.IndexOf(pb), c);
                if (x.Mentions.HasFlag(ShapesMentions.Size))
                    Assert.IsTrue(c.Contains("small") || c.Contains("little") || c.Contains("large") || c.Contains("big"), c);
            }
            Assert.IsFalse(c.Contains("a orange") || c.Contains("{"), c);
        }
        // Varied wording: several distinct templates in use.
        Assert.IsTrue(all.Select(x => x.Caption.Split(' ')[0]).Distinct().Count() >= 3);
    }

    [TestMethod]
    public void StoriesEndAmbiguouslyAndTheLastImageChangesAsSaid()
    {
        var (_, data) = World.Value;
        var stories = data.Stories(ShapesSplit.Train).Concat(data.Stories(ShapesSplit.Test)).ToList();
        Assert.IsTrue(stories.Select(s => s.FinalChange).Distinct().Count() >= 4, "too few kinds of final change");
        foreach (var s in stories)
        {
            Assert.AreEqual(5, s.Steps.Count);
            var last = s.Steps[4].Caption;
            Assert.IsTrue(last.StartsWith("it ") || last.StartsWith("another one "), last);
            var before = s.Steps[3].Scene.Objects[0];
            // Ambiguous on its own: it never says both the colour and the shape of the object it talks about.
            Assert.IsFalse(last.Contains(ShapesWords.Color(before.Color)) && last.Contains(ShapesWords.Shape(before.Shape)), last);
            Assert.IsNull(ShapesCaptions.ParseSingle(last), last);
            var after = s.Steps[4].Scene.Objects;
            switch (s.FinalChange)
            {
                case ShapesStoryChange.Recolor:
                    Assert.AreEqual(before with { Color = after[0].Color }, after[0]);
                    Assert.AreNotEqual(before.Color, after[0].Color);
                    Assert.AreEqual($"it turns {ShapesWords.Color(after[0].Color)}", last);
                    break;
                case ShapesStoryChange.Move:
                    Assert.AreEqual(before with { Position = after[0].Position }, after[0]);
                    Assert.AreNotEqual(before.Position, after[0].Position);
                    Assert.AreEqual($"it moves to the {ShapesWords.Direction(after[0].Position)}", last);
                    break;
                case ShapesStoryChange.Grow:
                    Assert.AreEqual((ShapeSize.Small, ShapeSize.Large), (before.Size, after[0].Size));
                    Assert.AreEqual(before with { Size = ShapeSize.Large }, after[0]);
                    break;
                case ShapesStoryChange.Shrink:
                    Assert.AreEqual(before with { Size = ShapeSize.Small }, after[0]);
                    Assert.AreEqual(ShapeSize.Large, before.Size);
                    break;
                case ShapesStoryChange.Reshape:
                    Assert.AreEqual(before with { Shape = after[0].Shape }, after[0]);
                    Assert.AreNotEqual(before.Shape, after[0].Shape);
                    StringAssert.EndsWith(last, ShapesWords.Shape(after[0].Shape));
                    break;
                case ShapesStoryChange.Duplicate:
                    Assert.AreEqual(2, after.Count);
                    Assert.IsTrue(after.Contains(before));
                    Assert.AreEqual((before.Color, before.Shape, before.Size), (after[0].Color, after[0].Shape, after[0].Size));
                    Assert.AreEqual((before.Color, before.Shape, before.Size), (after[1].Color, after[1].Shape, after[1].Size));
                    break;
            }
            // No step undoes the one before it.
            for (int i = 2; i < 5; i++)
                if (s.Steps[i].Scene.Objects.Count == 1)
                    Assert.AreNotEqual(s.Steps[i - 2].Scene, s.Steps[i].Scene, $"story {s.Id} step {i + 1} undoes step {i}");
            // Earlier steps name the object explicitly.
            for (int i = 1; i < 4; i++)
            {
                var prev = s.Steps[i - 1].Scene.Objects[0];
                StringAssert.StartsWith(s.Steps[i].Caption, $"the {ShapesWords.Color(prev.Color)} {ShapesWords.Shape(prev.Shape)} ");
                Assert.AreEqual(1, s.Steps[i].Scene.Objects.Count);
            }
            Assert.IsTrue(s.Steps.All(x => File.Exists(x.ImagePath)));
        }
    }

    [TestMethod]
    public void DialoguesStateEveryAttribute()
    {
        var (_, data) = World.Value;
        foreach (var d in data.Dialogues(ShapesSplit.Train))
        {
            Assert.IsTrue(d.Rounds.Count is >= 4 and <= 10);
            var o = d.Scene.Objects.Single();
            var text = d.ToText();
            StringAssert.Contains(text, ShapesWords.Shape(o.Shape));
            StringAssert.Contains(text, ShapesWords.Color(o.Color));
            Assert.IsNull(ShapesCaptions.ParseSingle(d.Caption), "the opening caption must be vague");
            Assert.AreEqual(4, d.Rounds.Count(r => r.Informative && !r.Question.Contains("background")));
            StringAssert.StartsWith(text.Split('\n')[1], "Q: ");
            StringAssert.StartsWith(text.Split('\n')[2], "A: ");
        }
        Assert.IsTrue(data.Dialogues(ShapesSplit.Train).Any(d => d.Rounds.Any(r => !r.Informative)));
    }

    [TestMethod]
    public void DecisionLabelsAreRightByConstruction()
    {
        var (m, data) = World.Value;
        var gallery = data.Images(m.Options.DecisionGallery);
        var held = m.Options.HeldOutPairs.ToHashSet();
        foreach (var split in new[] { ShapesSplit.Train, ShapesSplit.Validation, ShapesSplit.Test })
        {
            var prompts = data.DecisionPrompts(split);
            Assert.IsTrue(prompts.Any(p => p.Label == ShapesDecision.Retrieve) && prompts.Any(p => p.Label == ShapesDecision.Generate));
            foreach (var p in prompts)
            {
                bool match = gallery.Any(g => p.Matches(g.Scene));
                Assert.AreEqual(p.Label == ShapesDecision.Retrieve, match, p.Prompt);
                Assert.AreEqual(p.Label == ShapesDecision.Generate, held.Contains(p.Object.Pair), p.Prompt);
                StringAssert.Contains(p.Prompt, p.Object.Pair.ToString());
            }
            var tsv = File.ReadAllLines(Path.Combine(m.Folder, $"decision.{ShapesWorld.SplitName(split)}.tsv"));
            Assert.AreEqual("prompt\tlabel", tsv[0]);
            CollectionAssert.AreEqual(prompts.Select(p => $"{p.Prompt}\t{p.LabelText}").ToList(), tsv.Skip(1).ToList());
        }
    }

    [TestMethod]
    public void InvalidOptionsNameTheOption()
    {
        string dir = NewFolder("bad");
        var e1 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ShapesWorld.Generate(new ShapesWorldOptions { Images = new(0, 1, 1) }, dir));
        Assert.AreEqual(nameof(ShapesWorldOptions.Images), e1.ParamName);
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ShapesWorld.Generate(new ShapesWorldOptions { ImageSize = 8 }, dir));
        Assert.AreEqual(nameof(ShapesWorldOptions.ImageSize), e2.ParamName);
        StringAssert.Contains(e2.Message, "ImageSize");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ShapesWorld.Generate(new ShapesWorldOptions { ImageSize = 4096 }, dir));
        var e3 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ShapesWorld.Generate(new ShapesWorldOptions { TwoObjectFraction = 1.5 }, dir));
        Assert.AreEqual(nameof(ShapesWorldOptions.TwoObjectFraction), e3.ParamName);
        var e4 = Assert.ThrowsExactly<ArgumentException>(() => ShapesWorld.Generate(new ShapesWorldOptions { HeldOutPairs = [new(ShapeColor.White, ShapeKind.Circle)] }, dir));
        Assert.AreEqual(nameof(ShapesWorldOptions.HeldOutPairs), e4.ParamName);
        Assert.IsFalse(Directory.Exists(dir), "nothing is written for invalid options");
        Assert.ThrowsExactly<FormatException>(() => ShapesPair.Parse("red:hexagon"));
        Assert.AreEqual(new ShapesPair(ShapeColor.Red, ShapeKind.Star), ShapesPair.Parse("Red:star"));
    }

    [TestMethod]
    public void UnwritableOutputFolderIsNamed()
    {
        string file = NewFolder("not-a-folder");
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllText(file, "x");
        string target = Path.Combine(file, "world");
        var e = Assert.ThrowsExactly<IOException>(() => ShapesWorld.Generate(Small(), target));
        StringAssert.Contains(e.Message, target);
    }

    [TestMethod]
    public void LoadingAMissingWorldNamesTheFile()
    {
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => ShapesWorldDataset.Load(NewFolder("missing")));
        StringAssert.Contains(e.Message, "world.json");
    }

    [TestMethod]
    public void OtherSizesAndBackgroundsRender()
    {
        var opts = new ShapesWorldOptions
        {
            ImageSize = 64, Images = new(12, 0, 0), HeldOutImages = 0, HeldOutPairs = [], Stories = new(0, 0, 0), Dialogues = new(0, 0, 0),
            DecisionPrompts = new(0, 0, 0), Backgrounds = [ShapesBackground.Grey, ShapesBackground.Teal], Shapes = Enum.GetValues<ShapeKind>(),
            Colors = Enum.GetValues<ShapeColor>(),
        };
        var m = ShapesWorld.Generate(opts, NewFolder("big"));
        var data = ShapesWorldDataset.Load(m.Folder);
        foreach (var x in data.Images(ShapesSplit.Train))
        {
            ShapesRenderer.LoadPixels(x.ImagePath, out int w, out _);
            Assert.AreEqual(64, w);
            StringAssert.Contains(x.Caption, $"{ShapesWords.Background(x.Scene.Background)} background");
        }
        Assert.AreEqual(0, data.Images(ShapesSplit.HeldOut).Count);
    }
}
