using Gill.ML.Modules;
using Gill.ML.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.World;

/// <summary>What <see cref="ShapesAttributeClassifier"/> sees in one single-object image.</summary>
/// <param name="Color">Predicted colour.</param>
/// <param name="Shape">Predicted shape.</param>
/// <param name="Size">Predicted size.</param>
/// <param name="Position">Predicted position.</param>
/// <param name="ColorConfidence">Softmax probability of the predicted colour.</param>
/// <param name="ShapeConfidence">Softmax probability of the predicted shape.</param>
public readonly record struct ShapesAttributePrediction(
    ShapeColor Color, ShapeKind Shape, ShapeSize Size, ShapePosition Position, float ColorConfidence, float ShapeConfidence)
{
    /// <summary>Whether colour and shape equal <paramref name="expected"/>'s.</summary>
    public bool MatchesColorAndShape(ShapesObject expected) => Color == expected.Color && Shape == expected.Shape;
}

/// <summary>Accuracies of <see cref="ShapesAttributeClassifier"/> against known objects.</summary>
/// <param name="Count">Number of images scored.</param>
/// <param name="ColorAccuracy">Fraction with the right colour.</param>
/// <param name="ShapeAccuracy">Fraction with the right shape.</param>
/// <param name="ColorAndShapeAccuracy">Fraction with both right.</param>
/// <param name="SizeAccuracy">Fraction with the right size.</param>
/// <param name="PositionAccuracy">Fraction with the right position.</param>
public sealed record ShapesAttributeMetrics(
    int Count, double ColorAccuracy, double ShapeAccuracy, double ColorAndShapeAccuracy, double SizeAccuracy, double PositionAccuracy);

/// <summary>Progress of <see cref="ShapesAttributeClassifier.Train"/>.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="Step">Steps done in all.</param>
/// <param name="TotalSteps">Steps in all.</param>
/// <param name="Loss">Loss of the last step (sum of the four heads' cross-entropies).</param>
public readonly record struct ShapesClassifierProgress(int Epoch, int Step, int TotalSteps, float Loss);

/// <summary>
/// A small CNN that reads colour, shape, size and position from single-object shapes-world images. It is an
/// evaluation tool: it measures whether a generator drew the requested colour and shape. It is trained on freshly
/// rendered images of every (colour, shape) pair, held-out pairs included, since it must judge those too.
/// </summary>
public sealed class ShapesAttributeClassifier : IDisposable
{
    /// <summary>Training options.</summary>
    public sealed class Options
    {
        internal static class Defaults
        {
            public const int ImageSize = 32;
            public const int TrainImages = 4000;
            public const int Epochs = 3;
            public const int BatchSize = 32;
            public const double LearningRate = 5e-3;
        }

        /// <summary>Image width and height the classifier reads.</summary>
        public int ImageSize { get; set; } = Defaults.ImageSize;

        /// <summary>Shapes it tells apart.</summary>
        public IReadOnlyList<ShapeKind> Shapes { get; set; } = ShapesWorldOptions.Defaults.Shapes;

        /// <summary>Colours it tells apart.</summary>
        public IReadOnlyList<ShapeColor> Colors { get; set; } = ShapesWorldOptions.Defaults.Colors;

        /// <summary>Backgrounds of its training images.</summary>
        public IReadOnlyList<ShapesBackground> Backgrounds { get; set; } = ShapesWorldOptions.Defaults.Backgrounds;

        /// <summary>Rendered training images.</summary>
        public int TrainImages { get; set; } = Defaults.TrainImages;

        /// <summary>Passes over the training images.</summary>
        public int Epochs { get; set; } = Defaults.Epochs;

        /// <summary>Images per step.</summary>
        public int BatchSize { get; set; } = Defaults.BatchSize;

        /// <summary>Adam learning rate (cosine-decayed to zero).</summary>
        public double LearningRate { get; set; } = Defaults.LearningRate;

        /// <summary>Seed of the rendered scenes, the initial weights and the batch order.</summary>
        public int Seed { get; set; }

        /// <summary>
        /// CPU threads torch uses while training (set for the duration of <see cref="Train"/> and restored after; the
        /// setting is process-wide). The network is so small that one thread is fastest: more threads spend their
        /// time synchronising (measured ~15× more CPU time with 2 threads on a busy 2-core machine).
        /// </summary>
        public int Threads { get; set; } = 1;

        /// <summary>Torch device ("cpu", "cuda:0").</summary>
        public string Device { get; set; } = "cpu";

        /// <summary>Checks every option.</summary>
        /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
        public void Validate()
        {
            if (ImageSize < ShapesRenderer.MinImageSize || ImageSize > 256)
                throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, $"{nameof(ImageSize)} must be in [{ShapesRenderer.MinImageSize}, 256].");
            if (TrainImages < 1) throw new ArgumentOutOfRangeException(nameof(TrainImages), TrainImages, $"{nameof(TrainImages)} must be at least 1.");
            if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, $"{nameof(Epochs)} must be at least 1.");
            if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, $"{nameof(BatchSize)} must be at least 1.");
            if (Threads < 1) throw new ArgumentOutOfRangeException(nameof(Threads), Threads, $"{nameof(Threads)} must be at least 1.");
            if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, $"{nameof(LearningRate)} must be positive.");
            if (Shapes is null || Shapes.Count < 2 || Shapes.Distinct().Count() != Shapes.Count)
                throw new ArgumentException($"{nameof(Shapes)} needs at least 2 distinct shapes.", nameof(Shapes));
            if (Colors is null || Colors.Count < 2 || Colors.Distinct().Count() != Colors.Count)
                throw new ArgumentException($"{nameof(Colors)} needs at least 2 distinct colours.", nameof(Colors));
            if (Backgrounds is null || Backgrounds.Count < 1)
                throw new ArgumentException($"{nameof(Backgrounds)} needs at least one background.", nameof(Backgrounds));
        }
    }

    private const string FormatName = "gill-shapes-attribute-classifier";
    private readonly ShapesAttributeNet _net;
    private readonly Device _device;

    private ShapesAttributeClassifier(ShapesAttributeNet net, int imageSize, IReadOnlyList<ShapeColor> colors, IReadOnlyList<ShapeKind> shapes, Device device)
    {
        _net = net;
        _device = device;
        ImageSize = imageSize;
        Colors = colors;
        Shapes = shapes;
        _net.eval();
    }

    /// <summary>Image width and height the classifier reads.</summary>
    public int ImageSize { get; }

    /// <summary>Colours it tells apart (class order of the colour head).</summary>
    public IReadOnlyList<ShapeColor> Colors { get; }

    /// <summary>Shapes it tells apart (class order of the shape head).</summary>
    public IReadOnlyList<ShapeKind> Shapes { get; }

    /// <summary>Renders single-object scenes of every (colour, shape) pair and trains the classifier on them.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static ShapesAttributeClassifier Train(Options options, IProgress<ShapesClassifierProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var device = torch.device(options.Device);
        var colors = options.Colors.ToArray();
        var shapes = options.Shapes.ToArray();
        var scenes = RandomScenes(options.TrainImages, options.ImageSize, colors, shapes, options.Backgrounds, options.Seed);

        var net = GlobalRandom.Seeded(options.Seed, () => new ShapesAttributeNet(colors.Length, shapes.Length));
        net.to(device);
        var result = new ShapesAttributeClassifier(net, options.ImageSize, colors, shapes, device);
        int threads = torch.get_num_threads();
        torch.set_num_threads(options.Threads);
        try
        {
            using var images = RenderBatch(scenes, options.ImageSize);
            using var targets = result.Targets(scenes.Select(s => s.Objects[0]).ToList());
            using var optimizer = torch.optim.Adam(net.parameters(), options.LearningRate);
            int perEpoch = (scenes.Count + options.BatchSize - 1) / options.BatchSize;
            int total = perEpoch * options.Epochs, step = 0;
            var rng = WorldRandom.For(options.Seed, "classifier/batches");
            net.train();
            for (int epoch = 1; epoch <= options.Epochs; epoch++)
            {
                var order = Enumerable.Range(0, scenes.Count).ToArray();
                rng.Shuffle(order);
                for (int b = 0; b < perEpoch; b++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var scope = torch.NewDisposeScope();
                    var idx = torch.tensor(order.AsSpan(b * options.BatchSize, Math.Min(options.BatchSize, scenes.Count - b * options.BatchSize)).ToArray().Select(i => (long)i).ToArray());
                    var x = images.index_select(0, idx).to(device);
                    var y = targets.index_select(0, idx).to(device);
                    var loss = result.Loss(net.call(x), y);
                    double lr = 0.5 * options.LearningRate * (1 + Math.Cos(Math.PI * step / total));
                    foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
                    optimizer.zero_grad();
                    loss.backward();
                    optimizer.step();
                    step++;
                    if (progress is not null && (step % 10 == 0 || step == total))
                        progress.Report(new ShapesClassifierProgress(epoch, step, total, loss.item<float>()));
                }
            }
            net.eval();
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
        finally
        {
            torch.set_num_threads(threads);
        }
    }

    /// <summary>Predicts the attributes of images given as a [N, 3, H, W] tensor of RGB values in [0, 1].</summary>
    /// <exception cref="ArgumentException">The tensor is not [N, 3, ImageSize, ImageSize].</exception>
    public IReadOnlyList<ShapesAttributePrediction> Predict(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4 || images.shape[1] != 3 || images.shape[2] != ImageSize || images.shape[3] != ImageSize)
            throw new ArgumentException($"Images must be [N, 3, {ImageSize}, {ImageSize}] (RGB in [0, 1]); got {SafeTensors.FormatShape(images.shape)}.", nameof(images));
        var result = new List<ShapesAttributePrediction>((int)images.shape[0]);
        using var noGrad = torch.no_grad();
        for (long start = 0; start < images.shape[0]; start += 256)
        {
            using var scope = torch.NewDisposeScope();
            var x = images.narrow(0, start, Math.Min(256, images.shape[0] - start)).to(ScalarType.Float32).to(_device);
            var logits = _net.call(x);
            var (c, s, z, p) = Split(logits);
            var cp = c.softmax(1).max(1);
            var sp = s.softmax(1).max(1);
            var ci = cp.indexes.cpu().data<long>().ToArray(); var cc = cp.values.cpu().data<float>().ToArray();
            var si = sp.indexes.cpu().data<long>().ToArray(); var sc = sp.values.cpu().data<float>().ToArray();
            var zi = z.argmax(1).cpu().data<long>().ToArray(); var pi = p.argmax(1).cpu().data<long>().ToArray();
            for (int i = 0; i < ci.Length; i++)
                result.Add(new ShapesAttributePrediction(Colors[(int)ci[i]], Shapes[(int)si[i]], (ShapeSize)zi[i], (ShapePosition)pi[i], cc[i], sc[i]));
        }
        return result;
    }

    /// <summary>Predicts the attributes of image files (PNG), each ImageSize × ImageSize.</summary>
    /// <exception cref="InvalidDataException">A file cannot be decoded or has another size; the message names it.</exception>
    public IReadOnlyList<ShapesAttributePrediction> Predict(IEnumerable<string> imagePaths)
    {
        ArgumentNullException.ThrowIfNull(imagePaths);
        var paths = imagePaths.ToList();
        var data = new float[paths.Count * 3 * ImageSize * ImageSize];
        for (int i = 0; i < paths.Count; i++)
        {
            var px = ShapesRenderer.LoadPixels(paths[i], out int w, out int h);
            if (w != ImageSize || h != ImageSize)
                throw new InvalidDataException($"Image '{paths[i]}' is {w}×{h}; the classifier reads {ImageSize}×{ImageSize}.");
            px.CopyTo(data, i * px.Length);
        }
        using var t = torch.tensor(data, [paths.Count, 3, ImageSize, ImageSize]);
        return Predict(t);
    }

    /// <summary>Scores predictions on <paramref name="images"/> ([N, 3, H, W] in [0, 1]) against the objects they should show.</summary>
    public ShapesAttributeMetrics Evaluate(IReadOnlyList<ShapesObject> expected, Tensor images)
    {
        ArgumentNullException.ThrowIfNull(expected);
        var pred = Predict(images);
        if (pred.Count != expected.Count)
            throw new ArgumentException($"{expected.Count} expected objects for {pred.Count} images.", nameof(expected));
        return Score(expected, pred);
    }

    /// <summary>Scores the classifier on single-object examples of a generated world (two-object examples are skipped).</summary>
    public ShapesAttributeMetrics Evaluate(IEnumerable<ShapesImageExample> examples)
    {
        ArgumentNullException.ThrowIfNull(examples);
        var single = examples.Where(e => e.Scene.Objects.Count == 1).ToList();
        return Score(single.Select(e => e.Scene.Objects[0]).ToList(), Predict(single.Select(e => e.ImagePath)));
    }

    /// <summary>Scores the classifier on freshly rendered single-object scenes (a seed other than the training seed gives unseen images).</summary>
    public ShapesAttributeMetrics EvaluateRendered(int count, int seed, IReadOnlyList<ShapesBackground>? backgrounds = null)
    {
        var scenes = RandomScenes(count, ImageSize, [.. Colors], [.. Shapes], backgrounds ?? [ShapesBackground.Black], seed);
        using var images = RenderBatch(scenes, ImageSize);
        return Evaluate(scenes.Select(s => s.Objects[0]).ToList(), images);
    }

    /// <summary>Saves the weights and class lists as one safetensors file (atomic write).</summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var meta = new Dictionary<string, string>
        {
            ["format"] = FormatName,
            ["image_size"] = ImageSize.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["colors"] = string.Join(",", Colors.Select(ShapesWords.Color)),
            ["shapes"] = string.Join(",", Shapes.Select(ShapesWords.Shape)),
        };
        var state = _net.state_dict().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().cpu())).ToList();
        SafeTensors.Save(path, state, meta);
    }

    /// <summary>Loads a classifier written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">The file is not a saved classifier, or a tensor is missing or misshapen.</exception>
    public static ShapesAttributeClassifier Load(string path, string device = "cpu")
    {
        using var ck = SafeTensorsCheckpoint.Open(path);
        var meta = ck.Files[0].Metadata;
        if (!meta.TryGetValue("format", out var f) || f != FormatName)
            throw new InvalidDataException($"'{path}' is not a saved shapes attribute classifier (metadata 'format' is not '{FormatName}').");
        try
        {
            int size = int.Parse(meta["image_size"], System.Globalization.CultureInfo.InvariantCulture);
            var colors = meta["colors"].Split(',').Select(c => Enum.Parse<ShapeColor>(c, true)).ToArray();
            var shapes = meta["shapes"].Split(',').Select(s => Enum.Parse<ShapeKind>(s, true)).ToArray();
            var net = new ShapesAttributeNet(colors.Length, shapes.Length);
            WeightLoader.Load(net, ck, k => k);
            var dev = torch.device(device);
            net.to(dev);
            return new ShapesAttributeClassifier(net, size, colors, shapes, dev);
        }
        catch (Exception ex) when (ex is KeyNotFoundException or FormatException or ArgumentException)
        {
            throw new InvalidDataException($"'{path}' has malformed classifier metadata: {ex.Message}", ex);
        }
    }

    /// <summary>Disposes the network.</summary>
    public void Dispose() => _net.Dispose();

    // ------------------------------------------------------------------ internals

    internal static List<ShapesScene> RandomScenes(int count, int imageSize, ShapeColor[] colors, ShapeKind[] shapes, IReadOnlyList<ShapesBackground> backgrounds, int seed)
    {
        var rng = WorldRandom.For(seed, "classifier/scenes");
        var list = new List<ShapesScene>(count);
        for (int i = 0; i < count; i++)
            list.Add(new ShapesScene(rng.Pick(backgrounds), [new ShapesObject(rng.Pick(shapes), rng.Pick(colors), rng.Pick(Enum.GetValues<ShapeSize>()), rng.Pick(Enum.GetValues<ShapePosition>()))]));
        return list;
    }

    internal static Tensor RenderBatch(IReadOnlyList<ShapesScene> scenes, int imageSize)
    {
        int per = 3 * imageSize * imageSize;
        var data = new float[scenes.Count * per];
        Parallel.For(0, scenes.Count, i => ShapesRenderer.RenderPixels(scenes[i], imageSize).CopyTo(data, i * per));
        return torch.tensor(data, [scenes.Count, 3, imageSize, imageSize]);
    }

    private Tensor Targets(IReadOnlyList<ShapesObject> objects)
    {
        var t = new long[objects.Count * 4];
        for (int i = 0; i < objects.Count; i++)
        {
            var o = objects[i];
            int c = IndexOf(Colors, o.Color), s = IndexOf(Shapes, o.Shape);
            (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]) = (c, s, (long)o.Size, (long)o.Position);
        }
        return torch.tensor(t, [objects.Count, 4]);
    }

    private static int IndexOf<T>(IReadOnlyList<T> list, T value)
    {
        for (int i = 0; i < list.Count; i++) if (EqualityComparer<T>.Default.Equals(list[i], value)) return i;
        throw new ArgumentException($"{value} is not one of the classifier's classes ({string.Join(", ", list)}).");
    }

    private (Tensor Color, Tensor Shape, Tensor Size, Tensor Position) Split(Tensor logits)
    {
        int nc = Colors.Count, ns = Shapes.Count;
        return (logits.narrow(1, 0, nc), logits.narrow(1, nc, ns), logits.narrow(1, nc + ns, 2), logits.narrow(1, nc + ns + 2, 5));
    }

    private Tensor Loss(Tensor logits, Tensor targets)
    {
        var (c, s, z, p) = Split(logits);
        var ce = torch.nn.functional.cross_entropy;
        return ce(c, targets[.., 0], null, -100, nn.Reduction.Mean, 0.0) + ce(s, targets[.., 1], null, -100, nn.Reduction.Mean, 0.0)
             + ce(z, targets[.., 2], null, -100, nn.Reduction.Mean, 0.0) + ce(p, targets[.., 3], null, -100, nn.Reduction.Mean, 0.0);
    }

    private static ShapesAttributeMetrics Score(IReadOnlyList<ShapesObject> expected, IReadOnlyList<ShapesAttributePrediction> pred)
    {
        int n = expected.Count;
        if (n == 0) return new ShapesAttributeMetrics(0, 0, 0, 0, 0, 0);
        double Frac(Func<int, bool> ok) => Enumerable.Range(0, n).Count(ok) / (double)n;
        return new ShapesAttributeMetrics(n,
            Frac(i => pred[i].Color == expected[i].Color),
            Frac(i => pred[i].Shape == expected[i].Shape),
            Frac(i => pred[i].MatchesColorAndShape(expected[i])),
            Frac(i => pred[i].Size == expected[i].Size),
            Frac(i => pred[i].Position == expected[i].Position));
    }
}

/// <summary>
/// Three stride-2 3×3 conv blocks (16, 32, 32 channels, batch norm, ReLU), adaptive average pooling to 4×4, a
/// 64-wide hidden layer and one linear layer holding the four heads' logits side by side (colours, shapes, 2 sizes,
/// 5 positions). About 0.6 M multiply-adds per 32×32 image.
/// </summary>
internal sealed class ShapesAttributeNet : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Conv2d conv3;
    private readonly BatchNorm2d bn3;
    private readonly Linear fc;
    private readonly Linear head;

    public ShapesAttributeNet(int colors, int shapes) : base(nameof(ShapesAttributeNet))
    {
        conv1 = nn.Conv2d(3, 16, 3, stride: 2, padding: 1);
        bn1 = nn.BatchNorm2d(16);
        conv2 = nn.Conv2d(16, 32, 3, stride: 2, padding: 1);
        bn2 = nn.BatchNorm2d(32);
        conv3 = nn.Conv2d(32, 32, 3, stride: 2, padding: 1);
        bn3 = nn.BatchNorm2d(32);
        fc = nn.Linear(32 * 16, 64);
        head = nn.Linear(64, colors + shapes + 2 + 5);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = nn.functional.relu(bn1.call(conv1.call(x)));
        h = nn.functional.relu(bn2.call(conv2.call(h)));
        h = nn.functional.adaptive_avg_pool2d(nn.functional.relu(bn3.call(conv3.call(h))), [4, 4]);
        h = nn.functional.relu(fc.call(h.flatten(1)));
        return head.call(h).MoveToOuterDisposeScope();
    }
}
