using Gill.ML.Imaging;
using Microsoft.ML.Data;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

[TestClass]
public class ClipImageProcessorTests
{
    private static readonly double[] Mean = [0.48145466, 0.4578275, 0.40821073];
    private static readonly double[] Std = [0.26862954, 0.26130258, 0.27577711];

    [TestMethod]
    public void Resampler_UnchangedSize_IsIdentity()
    {
        var rnd = new Random(1);
        var px = new byte[5 * 7 * 3];
        rnd.NextBytes(px);
        var outPx = PilResampler.Resize(px, 5, 7, 3, 5, 7, PilResampleFilter.Bicubic);
        CollectionAssert.AreEqual(px, outPx);
    }

    [TestMethod]
    public void Resampler_ConstantImage_StaysConstant()
    {
        foreach (var (w, h, ow, oh) in new[] { (9, 7, 4, 3), (4, 3, 11, 8), (30, 20, 7, 5), (5, 5, 5, 2) })
        {
            var px = Enumerable.Repeat((byte)173, w * h * 3).ToArray();
            var outPx = PilResampler.Resize(px, w, h, 3, ow, oh, PilResampleFilter.Bicubic);
            Assert.AreEqual(ow * oh * 3, outPx.Length);
            Assert.IsTrue(outPx.All(v => v == 173), $"{w}x{h} -> {ow}x{oh}");
        }
    }

    /// <summary>
    /// 4 → 2 along one axis: scale 2, support 2·2 = 4, output 0 is centred at 1 and reads inputs 0…3 with kernel
    /// arguments (x − 1 + 0.5)/2 = −0.25, 0.25, 0.75, 1.25. With a = −0.5: k(0.25) = 0.8671875, k(0.75) = 0.2265625,
    /// k(1.25) = −0.0703125; their sum is 1.890625. Output 1 is the mirror image.
    /// </summary>
    [TestMethod]
    public void Resampler_2xDownscale_MatchesHandComputedPilValues()
    {
        double[] k = [0.8671875, 0.8671875, 0.2265625, -0.0703125];
        double sum = k.Sum();
        Assert.AreEqual(1.890625, sum, 1e-15);
        byte[] row = [0, 100, 200, 50];
        // Pillow: weights normalised, quantised to 22 fractional bits (round half away from zero), +2^21, >> 22.
        int Pil(byte[] vals, double[] kern)
        {
            long acc = 1L << 21;
            for (int i = 0; i < 4; i++)
            {
                double w = kern[i] / sum * (1 << 22);
                acc += vals[i] * (long)(w < 0 ? Math.Ceiling(w - 0.5) : Math.Floor(w + 0.5));
            }
            return (int)Math.Clamp(acc >> 22, 0, 255);
        }
        int out0 = Pil(row, k);
        int out1 = Pil(row, [k[3], k[2], k[1], k[0]]);
        Assert.AreEqual(68, out0); // 0.4587·0 + 0.4587·100 + 0.1198·200 − 0.0372·50 = 67.97
        Assert.AreEqual(127, out1); // −0.0372·0 + 0.1198·100 + 0.4587·200 + 0.4587·50 = 126.65

        // Horizontal: a 4x1 RGB row; vertical: a 1x4 column. Both axes use the same weights.
        var h = PilResampler.Resize(row.SelectMany(v => new[] { v, v, v }).ToArray(), 4, 1, 3, 2, 1, PilResampleFilter.Bicubic);
        CollectionAssert.AreEqual(new byte[] { 68, 68, 68, 127, 127, 127 }, h);
        var v = PilResampler.Resize(row, 1, 4, 1, 1, 2, PilResampleFilter.Bicubic);
        CollectionAssert.AreEqual(new byte[] { 68, 127 }, v);
    }

    [TestMethod]
    public void Resampler_2DDownscale_IsSeparable_HorizontalThenVertical_With8BitRounding()
    {
        var rnd = new Random(3);
        int w = 8, h = 6;
        var px = new byte[w * h];
        rnd.NextBytes(px);
        var both = PilResampler.Resize(px, w, h, 1, 3, 4, PilResampleFilter.Bicubic);
        var horiz = PilResampler.Resize(px, w, h, 1, 3, h, PilResampleFilter.Bicubic);
        var then = PilResampler.Resize(horiz, 3, h, 1, 3, 4, PilResampleFilter.Bicubic);
        CollectionAssert.AreEqual(then, both);
    }

    [TestMethod]
    public void Resampler_Upscale_UsesUnscaledSupport()
    {
        // 2 → 4 (upscale): support 2 (not scaled), centres 0.25, 0.75, 1.25, 1.75. Output 0 reads inputs 0 and 1 with
        // kernel arguments x + 0.5 − 0.25: k(0.25) = 0.8671875, k(1.25) = −0.0703125 (inputs beyond the edge are dropped
        // and the rest renormalised).
        var (first, weights) = PilResampler.Coefficients(2, 4, PilResampleFilter.Bicubic);
        Assert.AreEqual(0, first[0]);
        Assert.AreEqual(2, weights[0].Length);
        Assert.AreEqual(0.8671875 / (0.8671875 - 0.0703125), weights[0][0], 1e-12);
        Assert.AreEqual(-0.0703125 / (0.8671875 - 0.0703125), weights[0][1], 1e-12);
    }

    [TestMethod]
    public void HuggingFaceShortestEdgeRule_TruncatesTheLongSide()
    {
        Assert.AreEqual((224, 298), ClipImageProcessor.ResizedSize(480, 640, 224));
        Assert.AreEqual((298, 224), ClipImageProcessor.ResizedSize(640, 480, 224));
        Assert.AreEqual((224, 224), ClipImageProcessor.ResizedSize(100, 100, 224));
    }

    [TestMethod]
    public void CenterCrop_FloorsOffsets_AndPadsWithZeros()
    {
        var px = Enumerable.Range(0, 5 * 3 * 3).Select(i => (byte)i).ToArray();
        var img = new RgbImage(5, 3, px);
        var c = ClipImageProcessor.CenterCrop(img, 2, 2); // top = (3-2)//2 = 0, left = (5-2)//2 = 1
        CollectionAssert.AreEqual(new byte[] { 3, 4, 5, 6, 7, 8, 18, 19, 20, 21, 22, 23 }, c.Pixels);

        var small = new RgbImage(2, 2, Enumerable.Repeat((byte)9, 12).ToArray());
        var p = ClipImageProcessor.CenterCrop(small, 4, 4); // image placed at ceil(2/2) = 1
        Assert.AreEqual(4, p.Width);
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++)
                Assert.AreEqual(y is 1 or 2 && x is 1 or 2 ? 9 : 0, p.Pixels[(y * 4 + x) * 3], $"({y},{x})");
    }

    [TestMethod]
    public void Pipeline_ConstantImage_GivesNormalisedConstant()
    {
        var proc = ClipImageProcessor.ForImageSize(8);
        var img = new RgbImage(20, 12, Enumerable.Range(0, 20 * 12).SelectMany(_ => new byte[] { 200, 100, 30 }).ToArray());
        using var t = proc.Preprocess(img);
        CollectionAssert.AreEqual(new long[] { 1, 3, 8, 8 }, t.shape);
        byte[] rgb = [200, 100, 30];
        for (int c = 0; c < 3; c++)
        {
            float expected = ((float)(rgb[c] / 255.0) - (float)Mean[c]) / (float)Std[c];
            using var ch = t[0, c];
            Assert.AreEqual(expected, ch.min().item<float>(), 1e-6f);
            Assert.AreEqual(expected, ch.max().item<float>(), 1e-6f);
        }
    }

    [TestMethod]
    public void Pipeline_MatchesResizeThenCropThenNormalise()
    {
        var rnd = new Random(5);
        var px = new byte[10 * 6 * 3];
        rnd.NextBytes(px);
        var img = new RgbImage(10, 6, px);
        var proc = ClipImageProcessor.ForImageSize(4);
        using var t = proc.Preprocess(img);
        // shortest side 6 → 4, long side int(4·10/6) = 6; crop left (6−4)//2 = 1.
        var resized = PilResampler.Resize(px, 10, 6, 3, 6, 4, PilResampleFilter.Bicubic);
        var values = t.data<float>().ToArray();
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 4; x++)
                {
                    byte b = resized[(y * 6 + x + 1) * 3 + c];
                    float expected = ((float)(b / 255.0) - (float)Mean[c]) / (float)Std[c];
                    Assert.AreEqual(expected, values[(c * 4 + y) * 4 + x], 1e-6f);
                }
    }

    [TestMethod]
    public void MLImage_BgraAndRgba_AndRawBytes_AgreeAndFilesDecode()
    {
        var rnd = new Random(7);
        int w = 9, h = 7;
        var rgb = new byte[w * h * 3];
        rnd.NextBytes(rgb);
        var bgra = new byte[w * h * 4];
        var rgba = new byte[w * h * 4];
        for (int i = 0; i < w * h; i++)
        {
            bgra[i * 4] = rgb[i * 3 + 2]; bgra[i * 4 + 1] = rgb[i * 3 + 1]; bgra[i * 4 + 2] = rgb[i * 3]; bgra[i * 4 + 3] = 255;
            rgba[i * 4] = rgb[i * 3]; rgba[i * 4 + 1] = rgb[i * 3 + 1]; rgba[i * 4 + 2] = rgb[i * 3 + 2]; rgba[i * 4 + 3] = 255;
        }
        var proc = ClipImageProcessor.ForImageSize(5);
        using var fromBytes = proc.Preprocess(rgb, w, h);
        using var mlBgra = MLImage.CreateFromPixels(w, h, MLPixelFormat.Bgra32, bgra);
        using var mlRgba = MLImage.CreateFromPixels(w, h, MLPixelFormat.Rgba32, rgba);
        using var a = proc.Preprocess(mlBgra);
        using var b = proc.Preprocess(mlRgba);
        Assert.IsTrue(fromBytes.equal(a).all().item<bool>(), "BGRA MLImage");
        Assert.IsTrue(fromBytes.equal(b).all().item<bool>(), "RGBA MLImage");

        var dir = Path.Combine(Path.GetTempPath(), "gill-clip-img-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var png = Path.Combine(dir, "x.png");
            using (var bmp = new SKBitmap(new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul)))
            {
                System.Runtime.InteropServices.Marshal.Copy(rgba, 0, bmp.GetPixels(), rgba.Length);
                using var data = bmp.Encode(SKEncodedImageFormat.Png, 100);
                File.WriteAllBytes(png, data.ToArray());
            }
            using var fromFile = proc.PreprocessFiles([png, png]);
            CollectionAssert.AreEqual(new long[] { 2, 3, 5, 5 }, fromFile.shape);
            Assert.IsTrue(fromFile[1].equal(fromBytes[0]).all().item<bool>(), "PNG file");

            var bad = Path.Combine(dir, "broken.jpg");
            File.WriteAllBytes(bad, [1, 2, 3, 4, 5]);
            var e = Assert.ThrowsExactly<InvalidDataException>(() => proc.PreprocessFiles([bad]));
            StringAssert.Contains(e.Message, bad);
            var missing = Path.Combine(dir, "missing.png");
            var f = Assert.ThrowsExactly<FileNotFoundException>(() => proc.PreprocessFiles([missing]));
            StringAssert.Contains(f.Message, missing);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void PreprocessorConfig_ReadsBothHuggingFaceFormats()
    {
        var dir = Path.Combine(Path.GetTempPath(), "gill-clip-pp-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var path = Path.Combine(dir, ClipImageProcessor.ConfigFile);
            File.WriteAllText(path, """{"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true, "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}""");
            var legacy = ClipImageProcessor.FromFolder(dir, 32);
            Assert.AreEqual(224, legacy.Options.ShortestEdge);
            Assert.AreEqual(224, legacy.Options.CropWidth);
            Assert.AreEqual(PilResampleFilter.Bicubic, legacy.Options.Resample);

            File.WriteAllText(path, """{"crop_size": {"height": 336, "width": 336}, "size": {"shortest_edge": 336}, "resample": 2, "rescale_factor": 0.00392156862745098}""");
            var modern = ClipImageProcessor.FromFolder(dir, 32);
            Assert.AreEqual(336, modern.Options.ShortestEdge);
            Assert.AreEqual(336, modern.Options.CropHeight);
            Assert.AreEqual(PilResampleFilter.Bilinear, modern.Options.Resample);

            File.WriteAllText(path, """{"resample": 9}""");
            var e = Assert.ThrowsExactly<InvalidDataException>(() => ClipImageProcessor.FromFolder(dir, 32));
            StringAssert.Contains(e.Message, path);

            File.Delete(path);
            var fallback = ClipImageProcessor.FromFolder(dir, 32);
            Assert.AreEqual(32, fallback.Options.ShortestEdge);
            Assert.AreEqual(32, fallback.Options.CropHeight);

            modern.Save(dir);
            var back = ClipImageProcessor.FromFolder(dir, 32);
            Assert.AreEqual(modern.Options with { ImageMean = back.Options.ImageMean, ImageStd = back.Options.ImageStd }, back.Options);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
