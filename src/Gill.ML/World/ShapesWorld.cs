using System.Text;
using System.Text.Json;

namespace Gill.ML.World;

/// <summary>
/// The shapes world: a small synthetic multimodal world (captioned images, stories, dialogues, retrieve-or-generate
/// prompts and a text corpus) that stands in for CC3M / VIST / VisDial / PartiPrompts so that small backbones and
/// GILL can be trained end to end on a CPU. Generation is deterministic: the same options give byte-identical files.
/// </summary>
/// <remarks>
/// Folder layout (paths relative to the world folder, which is also the folder of every TSV):
/// <code>
/// world.json                                  manifest (counts, paths, seed, options, options hash)
/// {split}.tsv                                 caption&lt;TAB&gt;image (header line), split = train|validation|test|heldout
/// {split}.jsonl                               one ShapesImageExample per line (caption, image, scene, mentions)
/// images/{split}/NNNNNN.png                   the images
/// stories.{split}.tsv / .jsonl                caption_1..5, image_1..5 / full ShapesStory records
/// dialogues.{split}.jsonl                     ShapesDialogue records; images/dialogues-{split}/NNNNNN.png
/// decision.{split}.tsv / .jsonl               prompt&lt;TAB&gt;label (ret|gen) / full ShapesDecisionPrompt records
/// corpus.{split}.txt                          one document per line: captions, joined stories, dialogues
/// </code>
/// </remarks>
public static class ShapesWorld
{
    /// <summary>Version of the folder layout written into world.json.</summary>
    public const int FormatVersion = 1;

    /// <summary>The manifest's file name.</summary>
    public const string ManifestFileName = "world.json";

    internal static readonly JsonSerializerOptions LineJson = new() { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The file-name form of a split ("train", "validation", "test", "heldout").</summary>
    public static string SplitName(ShapesSplit split) => split switch
    {
        ShapesSplit.Train => "train",
        ShapesSplit.Validation => "validation",
        ShapesSplit.Test => "test",
        ShapesSplit.HeldOut => "heldout",
        _ => throw new ArgumentOutOfRangeException(nameof(split), split, "Unknown split."),
    };

    private static readonly ShapesSplit[] MainSplits = [ShapesSplit.Train, ShapesSplit.Validation, ShapesSplit.Test];

    /// <summary>Generates a world into <paramref name="outputFolder"/> (created if needed; existing files are overwritten).</summary>
    /// <param name="options">What to generate; validated first.</param>
    /// <param name="outputFolder">The world folder.</param>
    /// <param name="progress">Receives per-stage progress.</param>
    /// <param name="cancellationToken">Stops generation between items.</param>
    /// <returns>The manifest, also saved as world.json.</returns>
    /// <exception cref="ArgumentException">An option is invalid; the message names it.</exception>
    /// <exception cref="IOException">The output folder cannot be created or written; the message names it.</exception>
    public static ShapesWorldManifest Generate(
        ShapesWorldOptions options, string outputFolder,
        IProgress<ShapesWorldProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputFolder);
        options.Validate();
        string root = Path.GetFullPath(outputFolder);
        EnsureWritable(root);

        var g = new Generator(options, root, progress, cancellationToken);
        return g.Run();
    }

    private static void EnsureWritable(string root)
    {
        try
        {
            Directory.CreateDirectory(root);
            string probe = Path.Combine(root, ".write-probe");
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new IOException($"Cannot write the shapes world to output folder '{root}': {ex.Message}", ex);
        }
    }

    /// <summary>Writes bytes to a temporary file next to <paramref name="path"/> and renames it into place.</summary>
    internal static void WriteAtomic(string path, ReadOnlySpan<byte> bytes)
    {
        string tmp = path + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
            fs.Write(bytes);
        File.Move(tmp, path, overwrite: true);
    }

    internal static void WriteTextAtomic(string path, string text) => WriteAtomic(path, new UTF8Encoding(false).GetBytes(text));

    private sealed class Generator(ShapesWorldOptions o, string root, IProgress<ShapesWorldProgress>? progress, CancellationToken ct)
    {
        private readonly ShapesPair[] _allowed = [.. o.Colors.SelectMany(c => o.Shapes.Select(s => new ShapesPair(c, s))).Where(p => !o.HeldOutPairs.Contains(p))];
        private readonly Dictionary<ShapesSplit, List<ShapesImageExample>> _images = [];
        private readonly Dictionary<ShapesSplit, List<string>> _corpus = [];
        private int _pngs;

        public ShapesWorldManifest Run()
        {
            var manifest = new ShapesWorldManifest
            {
                Seed = o.Seed, ImageSize = o.ImageSize, OptionsHash = o.Hash(), Options = o, Folder = root,
            };
            foreach (var split in MainSplits.Append(ShapesSplit.HeldOut))
            {
                _corpus[split] = [];
                int n = split == ShapesSplit.HeldOut ? o.HeldOutImages : o.Images[split];
                manifest.Images[split] = WriteImages(split, n);
            }
            foreach (var split in MainSplits)
            {
                manifest.Stories[split] = WriteStories(split, o.Stories[split]);
                manifest.Dialogues[split] = WriteDialogues(split, o.Dialogues[split]);
                manifest.DecisionPrompts[split] = WriteDecisionPrompts(split, o.DecisionPrompts[split]);
            }
            foreach (var split in MainSplits.Append(ShapesSplit.HeldOut))
            {
                string rel = $"corpus.{SplitName(split)}.txt";
                WriteTextAtomic(Path.Combine(root, rel), string.Concat(_corpus[split].Select(d => d + "\n")));
                manifest.Corpus[split] = new ShapesWorldFiles(_corpus[split].Count, null, rel);
            }
            var final = new ShapesWorldManifest
            {
                Seed = manifest.Seed, ImageSize = manifest.ImageSize, OptionsHash = manifest.OptionsHash, Options = o,
                Images = manifest.Images, Stories = manifest.Stories, Dialogues = manifest.Dialogues,
                DecisionPrompts = manifest.DecisionPrompts, Corpus = manifest.Corpus, PngFiles = _pngs, Folder = root,
            };
            WriteTextAtomic(Path.Combine(root, ManifestFileName), JsonSerializer.Serialize(final, ShapesWorldOptions.Json) + "\n");
            return final;
        }

        // ---------------------------------------------------------------- images

        private ShapesObject RandomObject(WorldRandom rng, ShapesPair pair, ShapePosition position) =>
            new(pair.Shape, pair.Color, rng.Pick(Enum.GetValues<ShapeSize>()), position);

        private ShapesScene RandomScene(WorldRandom rng, bool heldOut)
        {
            var bg = rng.Pick(o.Backgrounds);
            if (!rng.Chance(o.TwoObjectFraction))
            {
                var pair = heldOut ? rng.Pick(o.HeldOutPairs) : rng.Pick(_allowed);
                return new ShapesScene(bg, [RandomObject(rng, pair, rng.Pick(Enum.GetValues<ShapePosition>()))]);
            }
            bool horizontal = rng.Chance(0.5);
            var (p1, p2) = horizontal ? (ShapePosition.Left, ShapePosition.Right) : (ShapePosition.Top, ShapePosition.Bottom);
            ShapesPair a, b;
            if (heldOut)
            {
                var all = o.Colors.SelectMany(c => o.Shapes.Select(s => new ShapesPair(c, s))).ToArray();
                a = rng.Pick(o.HeldOutPairs);
                do b = rng.Pick(all); while (b == a);
                if (rng.Chance(0.5)) (a, b) = (b, a);
            }
            else
            {
                a = rng.Pick(_allowed);
                do b = rng.Pick(_allowed); while (b == a);
            }
            return new ShapesScene(bg, [RandomObject(rng, a, p1), RandomObject(rng, b, p2)]);
        }

        private ShapesWorldFiles WriteImages(ShapesSplit split, int count)
        {
            string name = SplitName(split);
            var rng = WorldRandom.For(o.Seed, "images/" + name);
            string folder = $"images/{name}";
            Directory.CreateDirectory(Path.Combine(root, folder));
            var items = new List<ShapesImageExample>(count);
            for (int i = 0; i < count; i++)
            {
                var scene = RandomScene(rng, split == ShapesSplit.HeldOut);
                var caption = ShapesCaptions.Describe(scene, o.PartialCaptionFraction, rng);
                items.Add(new ShapesImageExample(i, caption.Text, $"{folder}/{i:D6}.png", scene, caption.Mentions));
            }
            Render($"images/{name}", items.Select(x => (x.Scene, x.Image)).ToList());
            _images[split] = items;
            _corpus[split].AddRange(items.Select(x => x.Caption));
            var tsv = new StringBuilder("caption\timage\n");
            var jsonl = new StringBuilder();
            foreach (var x in items)
            {
                tsv.Append(x.Caption).Append('\t').Append(x.Image).Append('\n');
                jsonl.Append(JsonSerializer.Serialize(x, LineJson)).Append('\n');
            }
            WriteTextAtomic(Path.Combine(root, $"{name}.tsv"), tsv.ToString());
            WriteTextAtomic(Path.Combine(root, $"{name}.jsonl"), jsonl.ToString());
            return new ShapesWorldFiles(count, $"{name}.tsv", $"{name}.jsonl");
        }

        private void Render(string stage, List<(ShapesScene Scene, string Path)> jobs)
        {
            int done = 0;
            progress?.Report(new ShapesWorldProgress(stage, 0, jobs.Count));
            int every = Math.Max(1, jobs.Count / 100);
            Parallel.For(0, jobs.Count, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Environment.ProcessorCount }, i =>
            {
                WriteAtomic(Path.Combine(root, jobs[i].Path), ShapesRenderer.RenderPng(jobs[i].Scene, o.ImageSize));
                int d = Interlocked.Increment(ref done);
                if (d % every == 0 || d == jobs.Count) progress?.Report(new ShapesWorldProgress(stage, d, jobs.Count));
            });
            _pngs += jobs.Count;
            if (jobs.Count == 0) progress?.Report(new ShapesWorldProgress(stage, 0, 0));
        }

        // ---------------------------------------------------------------- stories

        private ShapesWorldFiles WriteStories(ShapesSplit split, int count)
        {
            string name = SplitName(split);
            var rng = WorldRandom.For(o.Seed, "stories/" + name);
            string folder = $"images/stories-{name}";
            Directory.CreateDirectory(Path.Combine(root, folder));
            var stories = new List<ShapesStory>(count);
            var jobs = new List<(ShapesScene, string)>();
            for (int i = 0; i < count; i++)
            {
                ct.ThrowIfCancellationRequested();
                var story = MakeStory(rng, i, folder);
                stories.Add(story);
                jobs.AddRange(story.Steps.Select(s => (s.Scene, s.Image)));
            }
            Render($"stories/{name}", jobs);
            var tsv = new StringBuilder("caption_1\tcaption_2\tcaption_3\tcaption_4\tcaption_5\timage_1\timage_2\timage_3\timage_4\timage_5\n");
            var jsonl = new StringBuilder();
            foreach (var s in stories)
            {
                tsv.AppendJoin('\t', s.Steps.Select(x => x.Caption).Concat(s.Steps.Select(x => x.Image))).Append('\n');
                jsonl.Append(JsonSerializer.Serialize(s, LineJson)).Append('\n');
                _corpus[split].Add(string.Join(" . ", s.Steps.Select(x => x.Caption)));
            }
            WriteTextAtomic(Path.Combine(root, $"stories.{name}.tsv"), tsv.ToString());
            WriteTextAtomic(Path.Combine(root, $"stories.{name}.jsonl"), jsonl.ToString());
            return new ShapesWorldFiles(count, $"stories.{name}.tsv", $"stories.{name}.jsonl");
        }

        private static string The(ShapesObject x) => $"the {ShapesWords.Color(x.Color)} {ShapesWords.Shape(x.Shape)}";

        private ShapesStory MakeStory(WorldRandom rng, int id, string folder)
        {
            var bg = rng.Pick(o.Backgrounds);
            var obj = RandomObject(rng, rng.Pick(_allowed), rng.Pick(Enum.GetValues<ShapePosition>()));
            var steps = new List<ShapesStoryStep>(5);
            void Add(string caption, ShapesScene scene) =>
                steps.Add(new ShapesStoryStep(caption, $"{folder}/{id:D6}-{steps.Count + 1}.png", scene));

            var first = ShapesCaptions.Describe(new ShapesScene(bg, [obj]), 0, rng);
            Add(first.Text, new ShapesScene(bg, [obj]));
            var previous = obj;
            for (int step = 2; step <= 4; step++)
            {
                ShapesStoryChange change;
                ShapesObject next;
                // Never undo the previous step (a blue star becoming a square and then a star again).
                do (change, next) = RandomChange(rng, obj, allowDuplicate: false);
                while (step > 2 && next == previous);
                previous = obj;
                string caption = change switch
                {
                    ShapesStoryChange.Move => $"{The(obj)} moves to the {ShapesWords.Direction(next.Position)}",
                    ShapesStoryChange.Recolor => $"{The(obj)} turns {ShapesWords.Color(next.Color)}",
                    ShapesStoryChange.Grow => $"{The(obj)} {(rng.Chance(0.5) ? "grows" : "gets bigger")}",
                    ShapesStoryChange.Shrink => $"{The(obj)} {(rng.Chance(0.5) ? "shrinks" : "gets smaller")}",
                    _ => $"{The(obj)} becomes {ShapesWords.Article(ShapesWords.Shape(next.Shape))} {ShapesWords.Shape(next.Shape)}",
                };
                obj = next;
                Add(caption, new ShapesScene(bg, [obj]));
            }
            ShapesStoryChange last;
            ShapesObject final;
            do (last, final) = RandomChange(rng, obj, allowDuplicate: true);
            while (last != ShapesStoryChange.Duplicate && final == previous);
            string ambiguous;
            ShapesScene finalScene;
            if (last == ShapesStoryChange.Duplicate)
            {
                var partner = final;
                ambiguous = (obj.Position, rng.Chance(0.5)) switch
                {
                    (ShapePosition.Left, false) => "another one appears to its right",
                    (ShapePosition.Right, false) => "another one appears to its left",
                    (ShapePosition.Top, _) => "another one appears below it",
                    (ShapePosition.Bottom, _) => "another one appears above it",
                    _ => "another one appears next to it",
                };
                finalScene = obj.Position is ShapePosition.Left or ShapePosition.Top
                    ? new ShapesScene(bg, [obj, partner]) : new ShapesScene(bg, [partner, obj]);
            }
            else
            {
                ambiguous = last switch
                {
                    ShapesStoryChange.Move => $"it moves to the {ShapesWords.Direction(final.Position)}",
                    ShapesStoryChange.Recolor => $"it turns {ShapesWords.Color(final.Color)}",
                    ShapesStoryChange.Grow => rng.Chance(0.5) ? "it grows" : "it gets bigger",
                    ShapesStoryChange.Shrink => rng.Chance(0.5) ? "it shrinks" : "it gets smaller",
                    _ => $"it becomes {ShapesWords.Article(ShapesWords.Shape(final.Shape))} {ShapesWords.Shape(final.Shape)}",
                };
                finalScene = new ShapesScene(bg, [final]);
            }
            Add(ambiguous, finalScene);
            return new ShapesStory(id, steps, last);
        }

        /// <summary>A random change of a single object that keeps it in a training (colour, shape) pair.</summary>
        private (ShapesStoryChange Change, ShapesObject Next) RandomChange(WorldRandom rng, ShapesObject x, bool allowDuplicate)
        {
            var kinds = new List<ShapesStoryChange> { ShapesStoryChange.Move, x.Size == ShapeSize.Small ? ShapesStoryChange.Grow : ShapesStoryChange.Shrink };
            var colors = o.Colors.Where(c => c != x.Color && !o.HeldOutPairs.Contains(new ShapesPair(c, x.Shape))).ToArray();
            var shapes = o.Shapes.Where(s => s != x.Shape && !o.HeldOutPairs.Contains(new ShapesPair(x.Color, s))).ToArray();
            if (colors.Length > 0) kinds.Add(ShapesStoryChange.Recolor);
            if (shapes.Length > 0) kinds.Add(ShapesStoryChange.Reshape);
            if (allowDuplicate && x.Position != ShapePosition.Centre) kinds.Add(ShapesStoryChange.Duplicate);
            var kind = rng.Pick(kinds);
            return kind switch
            {
                ShapesStoryChange.Move => (kind, x with { Position = rng.Pick(Enum.GetValues<ShapePosition>().Where(p => p != x.Position).ToArray()) }),
                ShapesStoryChange.Grow => (kind, x with { Size = ShapeSize.Large }),
                ShapesStoryChange.Shrink => (kind, x with { Size = ShapeSize.Small }),
                ShapesStoryChange.Recolor => (kind, x with { Color = rng.Pick(colors) }),
                ShapesStoryChange.Reshape => (kind, x with { Shape = rng.Pick(shapes) }),
                _ => (kind, x with { Position = Opposite(x.Position) }),
            };
        }

        private static ShapePosition Opposite(ShapePosition p) => p switch
        {
            ShapePosition.Left => ShapePosition.Right,
            ShapePosition.Right => ShapePosition.Left,
            ShapePosition.Top => ShapePosition.Bottom,
            ShapePosition.Bottom => ShapePosition.Top,
            _ => ShapePosition.Centre,
        };

        // ---------------------------------------------------------------- dialogues

        private static readonly (string Q, string A)[] Uninformative =
        [
            ("is the picture clear?", "yes"), ("is there any text?", "no"), ("is it a photo?", "no, it is a drawing"),
            ("are there any people?", "no"), ("is it moving?", "i can't tell"), ("is it shiny?", "i can't tell"),
            ("is it outdoors?", "i can't tell"), ("does it have a shadow?", "no"), ("is the image blurry?", "a little"),
            ("is it a cartoon?", "kind of"),
        ];

        private ShapesWorldFiles WriteDialogues(ShapesSplit split, int count)
        {
            string name = SplitName(split);
            var rng = WorldRandom.For(o.Seed, "dialogues/" + name);
            string folder = $"images/dialogues-{name}";
            Directory.CreateDirectory(Path.Combine(root, folder));
            var items = new List<ShapesDialogue>(count);
            for (int i = 0; i < count; i++)
            {
                ct.ThrowIfCancellationRequested();
                var scene = new ShapesScene(rng.Pick(o.Backgrounds), [RandomObject(rng, rng.Pick(_allowed), rng.Pick(Enum.GetValues<ShapePosition>()))]);
                items.Add(MakeDialogue(rng, i, scene, $"{folder}/{i:D6}.png"));
            }
            Render($"dialogues/{name}", items.Select(x => (x.Scene, x.Image)).ToList());
            var jsonl = new StringBuilder();
            foreach (var d in items)
            {
                jsonl.Append(JsonSerializer.Serialize(d, LineJson)).Append('\n');
                _corpus[split].Add(d.ToText(" "));
            }
            WriteTextAtomic(Path.Combine(root, $"dialogues.{name}.jsonl"), jsonl.ToString());
            return new ShapesWorldFiles(count, null, $"dialogues.{name}.jsonl");
        }

        private ShapesDialogue MakeDialogue(WorldRandom rng, int id, ShapesScene scene, string image)
        {
            var x = scene.Objects[0];
            string shape = ShapesWords.Shape(x.Shape), color = ShapesWords.Color(x.Color);
            string article = ShapesWords.Article(shape);
            var info = new List<ShapesDialogueRound>
            {
                rng.Chance(0.5)
                    ? new("what shape is it?", $"{article} {shape}", true)
                    : new("what kind of shape is it?", $"it is {article} {shape}", true),
                rng.Chance(0.5) ? new("what colour is it?", color, true) : new("what colour is the shape?", $"it is {color}", true),
                rng.Pick(new[]
                {
                    new ShapesDialogueRound("is it big?", x.Size == ShapeSize.Large ? "yes" : "no", true),
                    new ShapesDialogueRound("is it small?", x.Size == ShapeSize.Small ? "yes" : "no", true),
                    new ShapesDialogueRound("how big is it?", $"it is {ShapesWords.Size(x.Size)}", true),
                }),
                rng.Chance(0.6)
                    ? new("where is it?", ShapesWords.Position(x.Position), true)
                    : new("is it in the middle?", x.Position == ShapePosition.Centre ? "yes" : $"no, it is {ShapesWords.Position(x.Position)}", true),
            };
            if (scene.Background != ShapesBackground.Black || rng.Chance(0.3))
                info.Add(new("what colour is the background?", ShapesWords.Background(scene.Background), true));
            int rounds = Math.Max(info.Count, 4 + rng.Next(o.MaxDialogueRounds - 4 + 1));
            var pool = Uninformative.ToList();
            rng.Shuffle(pool);
            var all = info.Concat(pool.Take(rounds - info.Count).Select(u => new ShapesDialogueRound(u.Q, u.A, false))).ToList();
            rng.Shuffle(all);
            string caption = rng.Pick(new[] { "a picture with one shape in it", "an image of a single object", "a drawing of a shape", "there is one thing in the picture" });
            return new ShapesDialogue(id, caption, all, image, scene);
        }

        // ---------------------------------------------------------------- decision prompts

        private ShapesWorldFiles WriteDecisionPrompts(ShapesSplit split, int count)
        {
            string name = SplitName(split);
            var rng = WorldRandom.For(o.Seed, "decision/" + name);
            var gallery = _images[o.DecisionGallery].Where(x => x.Scene.Objects.Count == 1).ToList();
            if (count > 0 && gallery.Count == 0)
                throw new InvalidOperationException($"Decision prompts need single-object images in the gallery split '{SplitName(o.DecisionGallery)}', which has none; lower {nameof(ShapesWorldOptions.TwoObjectFraction)} or add images.");
            var items = new List<ShapesDecisionPrompt>(count);
            var labels = Enumerable.Range(0, count).Select(i => i % 2 == 0 ? ShapesDecision.Retrieve : ShapesDecision.Generate).ToList();
            rng.Shuffle(labels);
            for (int i = 0; i < count; i++)
            {
                ct.ThrowIfCancellationRequested();
                ShapesObject obj;
                ShapesBackground bg;
                if (labels[i] == ShapesDecision.Retrieve)
                {
                    var pick = rng.Pick(gallery).Scene;
                    (obj, bg) = (pick.Objects[0], pick.Background);
                }
                else
                {
                    obj = RandomObject(rng, rng.Pick(o.HeldOutPairs), rng.Pick(Enum.GetValues<ShapePosition>()));
                    bg = rng.Pick(o.Backgrounds);
                }
                var caption = ShapesCaptions.Describe(new ShapesScene(bg, [obj]), o.PartialCaptionFraction, rng);
                var prompt = new ShapesDecisionPrompt(i, caption.Text, labels[i], obj, bg, caption.Mentions);
                bool found = gallery.Any(g => prompt.Matches(g.Scene));
                if (found != (labels[i] == ShapesDecision.Retrieve))
                    throw new InvalidOperationException($"Decision prompt '{prompt.Prompt}' is labelled {prompt.LabelText} but the gallery {(found ? "holds" : "lacks")} a match.");
                items.Add(prompt);
            }
            var tsv = new StringBuilder("prompt\tlabel\n");
            var jsonl = new StringBuilder();
            foreach (var p in items)
            {
                tsv.Append(p.Prompt).Append('\t').Append(p.LabelText).Append('\n');
                jsonl.Append(JsonSerializer.Serialize(p, LineJson)).Append('\n');
            }
            WriteTextAtomic(Path.Combine(root, $"decision.{name}.tsv"), tsv.ToString());
            WriteTextAtomic(Path.Combine(root, $"decision.{name}.jsonl"), jsonl.ToString());
            progress?.Report(new ShapesWorldProgress($"decision/{name}", count, count));
            return new ShapesWorldFiles(count, $"decision.{name}.tsv", $"decision.{name}.jsonl");
        }
    }
}
